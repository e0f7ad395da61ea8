//! Helpers that keep every encoding canonical and bounded.

use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error, RangeCfg, Read, Write};

/// Implements `Write`, `EncodeSize` and `Read` (with `Cfg = ()`) for a struct whose fields are
/// written in the listed order; each field names the read configuration that bounds it.
macro_rules! codec_struct {
    ($ty:ident { $($field:ident : $cfg:expr),* $(,)? }) => {
        impl commonware_codec::Write for $ty {
            fn write(&self, buf: &mut impl bytes::BufMut) {
                $( commonware_codec::Write::write(&self.$field, buf); )*
            }
        }
        impl commonware_codec::EncodeSize for $ty {
            fn encode_size(&self) -> usize {
                0 $( + commonware_codec::EncodeSize::encode_size(&self.$field) )*
            }
        }
        impl commonware_codec::Read for $ty {
            type Cfg = ();
            fn read_cfg(
                buf: &mut impl commonware_codec::Buf,
                _: &(),
            ) -> Result<Self, commonware_codec::Error> {
                Ok(Self { $( $field: commonware_codec::Read::read_cfg(buf, &$cfg)?, )* })
            }
        }
    };
}

/// Read configuration for a vector of at most `max` self-bounded items.
pub(crate) fn vec_cfg<C: Default>(max: usize) -> (RangeCfg<usize>, C) {
    ((0..=max).into(), C::default())
}

/// A UTF-8 string of at most `MAX` bytes, encoded as a length-prefixed byte vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    /// Wraps `s`, or says how long it is when it exceeds `MAX` bytes.
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if s.len() > MAX {
            return Err(format!(
                "{} bytes is longer than the limit of {MAX}",
                s.len()
            ));
        }
        Ok(Self(s))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const MAX: usize> std::fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> Write for BoundedString<MAX> {
    fn write(&self, buf: &mut impl BufMut) {
        self.0.len().write(buf);
        buf.put_slice(self.0.as_bytes());
    }
}

impl<const MAX: usize> EncodeSize for BoundedString<MAX> {
    fn encode_size(&self) -> usize {
        self.0.len().encode_size() + self.0.len()
    }
}

impl<const MAX: usize> Read for BoundedString<MAX> {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        read_string(buf, MAX).map(Self)
    }
}

/// Reads a length-prefixed UTF-8 string of at most `max` bytes.
pub fn read_string(buf: &mut impl Buf, max: usize) -> Result<String, Error> {
    let bytes = Vec::<u8>::read_cfg(buf, &((0..=max).into(), ()))?;
    String::from_utf8(bytes).map_err(|_| Error::Invalid("string", "not valid UTF-8"))
}
