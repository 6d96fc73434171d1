//! The member key and the access tokens: read from the files the config names or from the
//! environment, each refused with a message naming where it came from. Never printed.

use super::*;

impl Config {
    /// The member keys (the sealing key first, then a previous one still accepted), or
    /// `None` for an unauthenticated cluster. Errors name the key or variable, never the
    /// key's bytes.
    pub fn member_keys(&self) -> Result<Option<Vec<crate::auth::MemberKey>>, ConfigError> {
        use crate::auth::MemberKey;
        let from_file = |key: &str, path: &std::path::Path| -> Result<MemberKey, ConfigError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(key, path.display(), format!("a readable key file ({e})")))?;
            MemberKey::from_hex(&text).map_err(|why| bad(key, path.display(), why))
        };
        let current = match std::env::var("RAFTLINE_MEMBER_KEY") {
            Ok(text) => Some(
                MemberKey::from_hex(&text)
                    .map_err(|why| bad("RAFTLINE_MEMBER_KEY", "(set)", why))?,
            ),
            Err(_) => match &self.transport.member_key_file {
                Some(path) => Some(from_file("transport.member_key_file", path)?),
                None => None,
            },
        };
        let Some(current) = current else {
            if self.transport.previous_member_key_file.is_some() {
                return Err(bad(
                    "transport.previous_member_key_file",
                    "(set)",
                    "only with a current key (transport.member_key_file)",
                ));
            }
            return Ok(None);
        };
        let mut keys = vec![current];
        if let Some(path) = &self.transport.previous_member_key_file {
            keys.push(from_file("transport.previous_member_key_file", path)?);
        }
        Ok(Some(keys))
    }

    /// A token from the environment variable `var`, else from the file named by `key`.
    pub(super) fn token(
        var: &str,
        key: &str,
        file: Option<&std::path::Path>,
    ) -> Result<Option<crate::access::SharedToken>, ConfigError> {
        use crate::access::SharedToken;
        if let Ok(text) = std::env::var(var) {
            return SharedToken::new(&text)
                .map(Some)
                .map_err(|why| bad(var, "(set)", why));
        }
        let Some(path) = file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(key, path.display(), format!("a readable token file ({e})")))?;
        SharedToken::new(&text)
            .map(Some)
            .map_err(|why| bad(key, path.display(), why))
    }

    /// The client token and the admin token, as the node checks them.
    pub fn access(&self) -> Result<crate::access::Access, ConfigError> {
        let client = Self::token(
            "RAFTLINE_CLIENT_TOKEN",
            "access.client_token_file",
            self.access.client_token_file.as_deref(),
        )?;
        let admin = Self::token(
            "RAFTLINE_ADMIN_TOKEN",
            "access.admin_token_file",
            self.access.admin_token_file.as_deref(),
        )?;
        Ok(crate::access::Access::tokens(client, admin))
    }

    /// The admin token's text, as an operator presents it (`raftline cluster ...`), from the
    /// same places the node reads it. Empty when none is configured.
    pub fn admin_credential(&self) -> Result<Vec<u8>, ConfigError> {
        Self::credential(
            "RAFTLINE_ADMIN_TOKEN",
            "access.admin_token_file",
            self.access.admin_token_file.as_deref(),
        )
    }

    /// The client token's text, as a client presents it. Empty when none is configured.
    pub fn client_credential(&self) -> Result<Vec<u8>, ConfigError> {
        Self::credential(
            "RAFTLINE_CLIENT_TOKEN",
            "access.client_token_file",
            self.access.client_token_file.as_deref(),
        )
    }

    pub(super) fn credential(
        var: &str,
        key: &str,
        file: Option<&std::path::Path>,
    ) -> Result<Vec<u8>, ConfigError> {
        let text = match std::env::var(var) {
            Ok(text) => text,
            Err(_) => match file {
                Some(path) => std::fs::read_to_string(path).map_err(|e| {
                    bad(key, path.display(), format!("a readable token file ({e})"))
                })?,
                None => return Ok(Vec::new()),
            },
        };
        Ok(text.trim().as_bytes().to_vec())
    }
}
