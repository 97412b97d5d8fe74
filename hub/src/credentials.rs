//! Device credentials and the broker's access rules.
//!
//! Every device has its own MQTT account: the username is the device id and
//! the password is 24 random bytes (printed once by `vaka device
//! provision`). vaka keeps only a hash, in the form Mosquitto's own
//! `password_file` uses for PBKDF2-SHA512:
//!
//! ```text
//! $7$<iterations>$<base64 salt, 12 bytes>$<base64 PBKDF2-HMAC-SHA512, 64 bytes>
//! ```
//!
//! so [`password_file`] writes the broker's file straight from the
//! database. The iteration count is Mosquitto's default (101): it matters
//! for passwords people choose, not for 192 random bits, and Mosquitto pays
//! it on every CONNECT.
//!
//! [`acl_file`] is the authorisation: with usernames equal to device ids,
//! two `pattern` lines give every device write access to its own
//! `{root}/d/{dev}/{obs,evt,status}` and read access to its own `…/err`
//! and `…/cmd`, and nothing else; only the gateway's account may read all
//! devices' topics (and write their `err` and `cmd`).

use std::num::NonZeroU32;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};

/// Mosquitto's default PBKDF2 iteration count (`mosquitto_passwd`).
const ITERATIONS: u32 = 101;
const SALT_BYTES: usize = 12;
const HASH_BYTES: usize = 64;
const PASSWORD_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the system's random number generator failed")]
    Random,
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A fresh random password: 24 bytes, URL-safe base64 (32 characters, no
/// `:` so it fits a `mqtt://user:password@` URL unescaped).
pub fn new_password() -> Result<String, CredentialError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CredentialError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The Mosquitto `$7$` hash of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    let mut salt = [0u8; SALT_BYTES];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| CredentialError::Random)?;
    Ok(hash_with(password, &salt, ITERATIONS))
}

fn hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; HASH_BYTES];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        salt,
        password.as_bytes(),
        &mut out,
    );
    format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(out))
}

/// Whether `password` matches a `$7$` hash (constant time). Anything that
/// is not a well-formed `$7$` hash matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let mut parts = hash.split('$');
    let (Some(""), Some("7"), Some(iterations), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iterations), Ok(salt), Ok(expected)) = (
        iterations.parse().ok().and_then(NonZeroU32::new),
        B64.decode(salt),
        B64.decode(expected),
    ) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

/// An account in the broker's password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub password_hash: String,
}

/// The text of a Mosquitto `password_file`: `user:hash` lines.
pub fn password_file(accounts: &[Account]) -> Result<String, CredentialError> {
    let mut out = String::new();
    for a in accounts {
        if a.username.is_empty() || a.username.contains([':', '\n', '+', '#', '/']) {
            return Err(CredentialError::Invalid(format!(
                "{:?} cannot be an MQTT username here",
                a.username
            )));
        }
        if !a.password_hash.starts_with("$7$") || a.password_hash.contains(['\n', ':']) {
            return Err(CredentialError::Invalid(format!(
                "the hash of {} is not a $7$ hash",
                a.username
            )));
        }
        out.push_str(&a.username);
        out.push(':');
        out.push_str(&a.password_hash);
        out.push('\n');
    }
    Ok(out)
}

/// The text of a Mosquitto `acl_file` for topic root `root` and the
/// gateway's account `gateway`.
///
/// Rules in Mosquitto's ACL file: lines before the first `user` line apply
/// to anonymous clients (none here: there are none, and
/// `allow_anonymous false`); `user` lines start a user's own rules;
/// `pattern` lines apply to every authenticated user, with `%u` replaced by
/// the username. Mosquitto refuses to substitute a username containing `+`
/// or `#`, and device ids are `[A-Za-z0-9_-]` anyway, so a device cannot
/// widen its pattern.
pub fn acl_file(root: &str, gateway: &str) -> String {
    format!(
        "# Generated by `vaka mosquitto-config`; do not edit: it is rewritten
# when a device is provisioned or revoked.

# The gateway reads every device's messages and answers on err and cmd.
user {gateway}
topic read {root}/d/+/obs
topic read {root}/d/+/evt
topic read {root}/d/+/status
topic write {root}/d/+/err
topic write {root}/d/+/cmd

# A device (username = device id) publishes only under its own topics and
# reads only its own replies and commands.
pattern write {root}/d/%u/obs
pattern write {root}/d/%u/evt
pattern write {root}/d/%u/status
pattern read {root}/d/%u/err
pattern read {root}/d/%u/cmd
"
    )
}

/// Writes `text` to `path` so that a reader (Mosquitto on SIGHUP) sees the
/// old file or the new one, never half of it: a temporary file in the same
/// directory, then a rename. `mode` is the Unix permission of the new file.
pub fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), CredentialError> {
    let err = |source| CredentialError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = options.open(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_a_hash_made_by_mosquitto_passwd() {
        // `mosquitto_passwd -H sha512-pbkdf2 -b file u secret` (Mosquitto 2.0.11).
        let hash = "$7$101$7yOji613d/6cyhaD$PeMJkEOkwal/QOSx1i4fO0qz025hbwGObBEm0kXIBGhWVgzeoLbQV7lehl4OhcpBpPfWyf7Wj+MX78c9IPFjjw==";
        assert!(verify_password("secret", hash));
        assert!(!verify_password("Secret", hash));
        assert!(!verify_password("secret", &hash.replace("$101$", "$102$")));
    }

    #[test]
    fn hashes_round_trip_and_are_salted() {
        let pw = new_password().unwrap();
        assert_eq!(pw.len(), 32);
        assert!(!pw.contains(':'));
        let a = hash_password(&pw).unwrap();
        let b = hash_password(&pw).unwrap();
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify_password(&pw, &a) && verify_password(&pw, &b));
        assert!(!verify_password("", &a));
        // The shape Mosquitto parses: 12-byte salt, 64-byte hash.
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        assert_eq!(B64.decode(parts[3]).unwrap().len(), SALT_BYTES);
        assert_eq!(B64.decode(parts[4]).unwrap().len(), HASH_BYTES);
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        for h in [
            "",
            "$7$",
            "$6$abc$def",
            "$7$0$AAAA$AAAA",
            "$7$101$!!$AAAA",
            "plain",
        ] {
            assert!(!verify_password("x", h), "{h}");
        }
    }

    #[test]
    fn password_file_refuses_odd_usernames() {
        let ok = Account {
            username: "scale-1".into(),
            password_hash: hash_password("x").unwrap(),
        };
        assert!(
            password_file(std::slice::from_ref(&ok))
                .unwrap()
                .starts_with("scale-1:$7$101$")
        );
        for bad in ["a:b", "a+", "#", ""] {
            let a = Account {
                username: bad.into(),
                ..ok.clone()
            };
            assert!(password_file(&[a]).is_err(), "{bad}");
        }
    }
}
