//! A multi-step API journey: log in, take the token from the JSON answer,
//! call an authenticated endpoint with it and check the fields.
//!
//! vars: `base_url`, `user`; secrets: `password`.
use serde::Deserialize;
use waymark_sdk::{Result, check, check_eq, http, step, vars};

#[derive(Deserialize)]
struct Login {
    token: String,
}

#[derive(Deserialize)]
struct Profile {
    user: String,
    plan: String,
}

fn run() -> Result<()> {
    let base = vars::require("base_url")?;
    let user = vars::get_or("user", "qa");
    let password = vars::require("password")?;

    let token = step("log in", || -> Result<String> {
        let resp = http::post(format!("{base}/login"))
            .json(&serde_json::json!({ "user": user, "password": password }))?
            .send()?;
        check_eq("status is 200", resp.status, 200);
        let login: Login = resp.json()?;
        check("token is not empty", !login.token.is_empty());
        Ok(login.token)
    })?;

    step("profile", || -> Result<()> {
        let resp = http::get(format!("{base}/me")).bearer(&token).send()?;
        check_eq("status is 200", resp.status, 200);
        let me: Profile = resp.json()?;
        check_eq("user matches", me.user.as_str(), user.as_str());
        check("plan is set", !me.plan.is_empty());
        Ok(())
    })?;

    step("rejects a bad token", || -> Result<()> {
        let resp = http::get(format!("{base}/me"))
            .bearer("not-a-token")
            .send()?;
        check_eq("status is 401", resp.status, 401);
        Ok(())
    })
}

waymark_sdk::journey!(run);
