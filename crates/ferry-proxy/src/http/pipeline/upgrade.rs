//! Upgrades (WebSocket and any `upgrade_type` configured).

use crate::http::conn_manager::ConnContext;

/// An upgrade the request asks for and the configuration allows.
pub(crate) struct Upgrade;

/// The upgrade `parts` asks for, if the connection manager allows it.
pub(super) fn requested(_parts: &http::request::Parts, _conn: &ConnContext) -> Option<Upgrade> {
    None
}
