//! `Debug` for wire types that carry secrets (API keys, tokens, passwords,
//! sealed material): every other field as usual, each secret as
//! `<redacted>`, so a `?body` in a log line or a panic message shows its
//! shape and none of its secrets.
//!
//! `debug_redacting!(Type { field, ...; secret: field, ... })` writes the
//! impl. It destructures the whole struct, so a field added later fails to
//! compile until it is listed as shown or as secret.

/// What a secret field shows in `Debug`.
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

macro_rules! debug_redacting {
    ($type:ident { $($shown:ident),* $(,)? ; secret: $($secret:ident),+ $(,)? }) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let Self { $($shown,)* $($secret,)+ } = self;
                $(let _ = $secret;)+
                f.debug_struct(stringify!($type))
                    $(.field(stringify!($shown), $shown))*
                    $(.field(stringify!($secret), &$crate::redact::Redacted))+
                    .finish()
            }
        }
    };
}

pub(crate) use debug_redacting;
