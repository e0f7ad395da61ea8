//! Primitives integration tests.

/// Random bytes never panic a decoder.
mod decode;
/// Genesis files: the defaults validate; bad fields are named.
mod genesis;
/// Golden encodings: a format change must be deliberate.
mod golden;
