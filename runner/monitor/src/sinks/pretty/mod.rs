//! The `pretty` sink: the waterfall of each run on standard output, as
//! `waymark run` prints it. It has no keys of its own.

use std::io::Write;
use std::sync::Arc;

use serde::Deserialize;

use super::{Deliver, DeliverError, Delivery};
use crate::sinks::registry::SinkReader;

/// A `pretty` sink takes no keys besides `type`, `name` and `queue`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {}

pub(crate) fn read(_: &mut SinkReader<'_, '_>, _: Raw) -> Option<()> {
    Some(())
}

/// Writes the waterfall of each record to standard output.
pub struct Pretty;

impl Deliver for Pretty {
    fn deliver(&mut self, batch: &[Arc<Delivery>]) -> Result<(), DeliverError> {
        let mut out = std::io::stdout().lock();
        for d in batch {
            writeln!(out, "{}", crate::pretty::render(&d.record, false))
                .map_err(DeliverError::Stdout)?;
        }
        out.flush().map_err(DeliverError::Stdout)
    }
}
