#![doc = include_str!("../README.md")]

pub mod channels;
pub mod conversations;
pub mod inbound;
pub mod outbound;
pub mod schema;

pub use channels::{Channel, ChannelInput, ChannelView};
pub use conversations::{ConversationView, MessageView};
