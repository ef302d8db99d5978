//! Every integration test of ferry-host, in one test binary: the ABI
//! against hand-written modules (`abi`), containment (`containment`),
//! the docs' tables against the host's (`docs`) and tiered compilation
//! (`tiering`).

mod abi;
mod containment;
mod docs;
mod tiering;
