use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Crockford base32 in lowercase, as the TypeID specification uses.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const SUFFIX_LEN: usize = 26;

/// Why a string is not an identifier of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("identifier must start with {expected:?}")]
    Prefix { expected: &'static str },
    #[error("identifier must end in 26 base32 characters (0-9, a-z without i, l, o, u)")]
    Suffix,
    #[error("identifier is not a UUID")]
    Uuid,
}

/// The TypeID text form of a UUID: `<prefix>_<26 chars of base32>`, sortable
/// like the UUID itself (seed 004 shows `agent_01j...`).
#[derive(Debug)]
pub struct TypeId;

impl TypeId {
    pub fn encode(prefix: &str, id: Uuid) -> String {
        let value = id.as_u128();
        let mut text = String::with_capacity(prefix.len() + 1 + SUFFIX_LEN);
        text.push_str(prefix);
        text.push('_');
        // 26 characters carry 130 bits; the first one holds the top 3 bits.
        for index in 0..SUFFIX_LEN {
            let shift = 5 * (SUFFIX_LEN - 1 - index);
            let digit = ((value >> shift) & 0x1f) as usize;
            text.push(char::from(ALPHABET[digit]));
        }
        text
    }

    pub fn decode(prefix: &'static str, text: &str) -> Result<Uuid, IdError> {
        let suffix = text
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(IdError::Prefix { expected: prefix })?;
        if suffix.len() != SUFFIX_LEN {
            return Err(IdError::Suffix);
        }
        let mut value: u128 = 0;
        for (index, byte) in suffix.bytes().enumerate() {
            let digit = ALPHABET
                .iter()
                .position(|candidate| *candidate == byte)
                .ok_or(IdError::Suffix)?;
            // A first digit above 7 would need a 131st bit.
            if index == 0 && digit > 7 {
                return Err(IdError::Suffix);
            }
            value = (value << 5) | digit as u128;
        }
        Ok(Uuid::from_u128(value))
    }
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// A UUID v7 for `now`, with the random bits supplied by the
            /// caller: this crate reads neither the clock nor a random source.
            pub fn new_v7(now: OffsetDateTime, random: [u8; 10]) -> Self {
                let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError::Uuid)
            }
        }
    };
}

uuid_id!(
    /// An agent's primary key (`id` in seed 001, `agentId` in TypeID form in
    /// seed 004).
    AgentId
);
uuid_id!(
    /// The isolation boundary every tenant-owned row carries.
    TenantId
);

impl AgentId {
    pub const TYPE_PREFIX: &'static str = "agent";

    pub fn to_type_id(&self) -> String {
        TypeId::encode(Self::TYPE_PREFIX, self.0)
    }

    pub fn parse_type_id(text: &str) -> Result<Self, IdError> {
        TypeId::decode(Self::TYPE_PREFIX, text).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    #[test]
    fn matches_the_typeid_specification_vectors() {
        // Vectors from the TypeID specification's valid.yml.
        let nil = AgentId::from_uuid(Uuid::nil());
        assert_eq!(
            TypeId::encode("agent", nil.as_uuid()),
            "agent_00000000000000000000000000"
        );
        let one = Uuid::from_u128(1);
        assert_eq!(TypeId::encode("x", one), "x_00000000000000000000000001");
        let max = Uuid::from_u128(u128::MAX);
        assert_eq!(TypeId::encode("x", max), "x_7zzzzzzzzzzzzzzzzzzzzzzzzz");
        let sample = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        assert_eq!(
            TypeId::encode("prefix", sample),
            "prefix_01h455vb4pex5vsknk084sn02q"
        );
    }

    #[test]
    fn rejects_malformed_typeids() {
        let good = "agent_01h455vb4pex5vsknk084sn02q";
        assert!(AgentId::parse_type_id(good).is_ok());
        assert_eq!(
            AgentId::parse_type_id("user_01h455vb4pex5vsknk084sn02q"),
            Err(IdError::Prefix { expected: "agent" })
        );
        assert_eq!(
            AgentId::parse_type_id("agent01h455vb4pex5vsknk084sn02q"),
            Err(IdError::Prefix { expected: "agent" })
        );
        assert_eq!(
            AgentId::parse_type_id("agent_01h455vb4pex5vsknk084sn02"),
            Err(IdError::Suffix)
        );
        // 'u' is not in the alphabet; '8' as first digit overflows 128 bits.
        assert_eq!(
            AgentId::parse_type_id("agent_01h455vb4pex5vsknk084snu2"),
            Err(IdError::Suffix)
        );
        assert_eq!(
            AgentId::parse_type_id("agent_81h455vb4pex5vsknk084sn02q"),
            Err(IdError::Suffix)
        );
        assert_eq!(
            AgentId::parse_type_id("agent_01H455VB4PEX5VSKNK084SN02Q"),
            Err(IdError::Suffix)
        );
    }

    #[test]
    fn new_v7_is_a_version_7_uuid_ordered_by_time() {
        let earlier = AgentId::new_v7(datetime!(2026-03-10 00:00 UTC), [0xff; 10]);
        let later = AgentId::new_v7(datetime!(2026-03-10 00:00:01 UTC), [0; 10]);
        assert_eq!(earlier.as_uuid().get_version_num(), 7);
        assert!(earlier < later);
        assert!(earlier.to_type_id() < later.to_type_id());
        assert!(later.to_type_id().starts_with("agent_01"));
    }

    #[test]
    fn uuid_text_form_parses() {
        let id: AgentId = "01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap();
        assert_eq!(id.to_string(), "01890a5d-ac96-774b-bcce-b302099a8057");
        assert_eq!("not-a-uuid".parse::<TenantId>(), Err(IdError::Uuid));
    }

    proptest! {
        #[test]
        fn typeid_round_trips_and_keeps_order(a: u128, b: u128) {
            let (ua, ub) = (Uuid::from_u128(a), Uuid::from_u128(b));
            let (ta, tb) = (TypeId::encode("agent", ua), TypeId::encode("agent", ub));
            prop_assert_eq!(TypeId::decode("agent", &ta).unwrap(), ua);
            prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
        }
    }
}
