use std::fmt;
use std::str::FromStr;

/// Why a trace or span ID was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{what} must be {expected} bytes, got {got}")]
    WrongLength { what: &'static str, expected: usize, got: usize },
    #[error("{what} must not be all zeros")]
    AllZero { what: &'static str },
    #[error("{what} is not valid hex: {text:?}")]
    NotHex { what: &'static str, text: String },
}

macro_rules! define_id {
    ($name:ident, $len:expr, $what:expr) => {
        #[doc = concat!("A ", $what, ": ", stringify!($len), " bytes, never all zeros, shown as lowercase hex.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            /// Accepts exactly the right number of bytes, not all zero.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                let array: [u8; $len] =
                    bytes.try_into().map_err(|_| IdError::WrongLength { what: $what, expected: $len, got: bytes.len() })?;
                if array == [0u8; $len] {
                    return Err(IdError::AllZero { what: $what });
                }
                Ok(Self(array))
            }

            /// Parses hex. Shorter hex (e.g. a 64-bit Zipkin or Jaeger trace ID) is left-padded with zeros.
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                let text = text.trim();
                if text.is_empty() || text.len() > $len * 2 {
                    return Err(IdError::NotHex { what: $what, text: text.chars().take(64).collect() });
                }
                let padded = format!("{:0>width$}", text, width = $len * 2);
                let mut out = [0u8; $len];
                hex::decode_to_slice(&padded, &mut out)
                    .map_err(|_| IdError::NotHex { what: $what, text: text.chars().take(64).collect() })?;
                Self::from_slice(&out)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::from_hex(text)
            }
        }

        /// Hex in human-readable formats (JSON), the raw bytes in binary ones.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.serialize_str(&self.to_hex())
                } else {
                    serde::Serialize::serialize(&self.0, serializer)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                    Self::from_hex(&text).map_err(serde::de::Error::custom)
                } else {
                    // Binary forms are Clew's own (spans waiting in memory): they hold what
                    // was accepted, which includes zero IDs where the model allows them.
                    Ok(Self(<[u8; $len] as serde::Deserialize>::deserialize(deserializer)?))
                }
            }
        }
    };
}

impl TraceId {
    /// Hex as Jaeger and Zipkin print it: a trace ID whose high half is zero (a 64-bit ID) as
    /// 16 characters, any other as 32.
    pub fn to_compact_hex(&self) -> String {
        if self.0[..8] == [0; 8] { hex::encode(&self.0[8..]) } else { self.to_hex() }
    }
}

define_id!(TraceId, 16, "trace ID");
define_id!(SpanId, 8, "span ID");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_padding() {
        let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let short = TraceId::from_hex("a3ce929d0e0e4736").unwrap();
        assert_eq!(short.to_hex(), "0000000000000000a3ce929d0e0e4736");
    }

    #[test]
    fn json_carries_ids_as_hex() {
        let id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"00f067aa0ba902b7\"");
        assert_eq!(serde_json::from_str::<SpanId>("\"00f067aa0ba902b7\"").unwrap(), id);
        assert!(serde_json::from_str::<SpanId>("\"0000000000000000\"").is_err());
    }

    #[test]
    fn refuses_zero_wrong_length_and_garbage() {
        assert_eq!(SpanId::from_slice(&[0; 8]), Err(IdError::AllZero { what: "span ID" }));
        assert!(matches!(SpanId::from_slice(&[1; 7]), Err(IdError::WrongLength { got: 7, .. })));
        assert!(matches!(TraceId::from_hex("zz"), Err(IdError::NotHex { .. })));
        assert!(TraceId::from_hex(&"a".repeat(33)).is_err());
    }
}
