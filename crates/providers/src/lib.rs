#![doc = include_str!("../README.md")]

pub mod messenger;
pub mod twilio;
