//! The wire formats memgate speaks, translated to and from the [`crate::ir`] as pure functions.

pub(crate) mod common;
