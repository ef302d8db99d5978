//! HTTP: the connection manager and what it uses.

pub(crate) mod body;
pub(crate) mod conn_manager;
pub(crate) mod pipeline;
pub(crate) mod preface;
pub(crate) mod rescue;
pub(crate) mod routing;
pub(crate) mod stream_timers;
