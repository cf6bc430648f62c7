//! The HTTP/1.1 and SSE layer, hand-rolled on smol + async-h1.
//!
//! async-h1 does the framing; this module owns everything around it that a gateway needs and
//! async-h1 does not do: the accept loop and keep-alive with our own timeouts, answering
//! malformed requests instead of dropping them, refusing heads whose framing or Host a proxy
//! could read another way, which hosts and origins browsers may reach us under, body limits,
//! disconnect detection, and SSE in both directions with one frame per HTTP chunk so nothing is
//! buffered.

mod body;
mod head;
mod origin;
mod response;
mod server;
pub mod sse;
mod stream;

pub use body::{over_budget, read_body};
pub use origin::BrowserPolicy;
pub use response::{error_response, json_response, sse_response, text_response};
pub use server::{Peer, Server, ServerOptions};
pub use stream::{frame_channel, FrameSender};
