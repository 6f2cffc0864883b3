//! {{name}}: a Waymark journey. It checks the service's health, then logs in.
//!
//! vars: `base_url`, `user`; secrets: `password`.
use serde::Deserialize;
use waymark_sdk::{Result, check, check_eq, http, step, vars};

#[derive(Deserialize)]
struct Login {
    token: String,
}

fn run() -> Result<()> {
    let base = vars::require("base_url")?;

    step("health", || -> Result<()> {
        let resp = http::get(format!("{base}/health")).send()?;
        check_eq("status is 200", resp.status, 200);
        Ok(())
    })?;

    step("log in", || -> Result<()> {
        let user = vars::get_or("user", "qa");
        let password = vars::require("password")?;
        let resp = http::post(format!("{base}/login"))
            .json(&serde_json::json!({ "user": user, "password": password }))?
            .send()?;
        check_eq("status is 200", resp.status, 200);
        let login: Login = resp.json()?;
        check("token is not empty", !login.token.is_empty());
        Ok(())
    })
}

waymark_sdk::journey!(run);
