//! The exchange layer: what sits between the API's handlers and the upstreams, for every
//! inbound format. So far: the model calls memory makes (see [`models`]).

pub(crate) mod models;
