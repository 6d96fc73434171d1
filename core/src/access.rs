//! Who may open a session, and who may operate the cluster.
//!
//! Members authenticate each other with the member key (`auth`). Clients and operators are
//! checked here, at the leader's door:
//!
//! - A client's `ClientConnect` carries a credential that the node's [`Authenticator`] accepts
//!   or refuses. Only an accepted connect binds a session to the source it came from; every
//!   other frame of the session (messages, keep-alives, closes) is taken only from that
//!   source. A client that moved, or that follows leadership to another member, connects
//!   again with its credential, which binds the session to the new source.
//! - An operator's `AdminRequest` carries the admin credential, a separate token from the
//!   clients': holding a client token does not make one an operator.
//!
//! Without a client authenticator configured every connect is accepted ([`AllowAll`]); without
//! an admin token every admin request is. The node warns at start when either is open.

/// Decides whether a connect's credential opens (or re-binds) a session. Called on the leader
/// only, once per connect, never on the replication path; it may not block.
pub trait Authenticator: Send {
    fn authenticate(&mut self, session_id: u64, credential: &[u8]) -> bool;
}

/// Accepts every connect (an unauthenticated cluster).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&mut self, _session_id: u64, _credential: &[u8]) -> bool {
        true
    }
}

/// The shortest token accepted: 16 bytes, 128 bits when drawn at random.
pub const TOKEN_LEN_MIN: usize = 16;

/// One shared secret token, for every client (or for operators). Keeps only the token's
/// BLAKE3 hash and compares hashes in constant time, so neither the token nor how much of a
/// guess matched leaks through memory dumps or timing.
#[derive(Clone)]
pub struct SharedToken {
    hash: blake3::Hash,
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedToken(..)")
    }
}

impl SharedToken {
    /// A token from its text: surrounding white space (a trailing newline) is not part of it.
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.len() < TOKEN_LEN_MIN {
            return Err(format!(
                "a token of at least {TOKEN_LEN_MIN} characters (it has {})",
                token.len()
            ));
        }
        if token.len() > crate::codec::message::CREDENTIAL_LEN_MAX {
            return Err(format!(
                "a token of at most {} characters (it has {})",
                crate::codec::message::CREDENTIAL_LEN_MAX,
                token.len()
            ));
        }
        Ok(Self {
            hash: blake3::hash(token.as_bytes()),
        })
    }

    /// Whether `credential` is the token. `blake3::Hash` compares in constant time.
    pub fn matches(&self, credential: &[u8]) -> bool {
        blake3::hash(credential) == self.hash
    }
}

impl Authenticator for SharedToken {
    fn authenticate(&mut self, _session_id: u64, credential: &[u8]) -> bool {
        self.matches(credential)
    }
}

/// The leader's door: the client authenticator and the admin token.
pub struct Access {
    pub clients: Box<dyn Authenticator>,
    /// `None`: admin requests are not authenticated.
    pub admin: Option<SharedToken>,
    /// Whether `clients` checks anything (for the start-up warning).
    pub clients_checked: bool,
}

impl Access {
    /// Every connect and every admin request accepted.
    pub fn open() -> Self {
        Self {
            clients: Box::new(AllowAll),
            admin: None,
            clients_checked: false,
        }
    }

    /// A shared client token (if any) and an admin token (if any).
    pub fn tokens(client: Option<SharedToken>, admin: Option<SharedToken>) -> Self {
        match client {
            Some(t) => Self {
                clients: Box::new(t),
                admin,
                clients_checked: true,
            },
            None => Self {
                admin,
                ..Self::open()
            },
        }
    }

    /// Whether an admin request with `credential` is an operator's.
    pub fn admits_operator(&self, credential: &[u8]) -> bool {
        self.admin.as_ref().is_none_or(|t| t.matches(credential))
    }
}

impl Default for Access {
    fn default() -> Self {
        Self::open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only() {
        let t = SharedToken::new("correct horse battery staple\n").unwrap();
        assert!(t.matches(b"correct horse battery staple"));
        assert!(!t.matches(b"correct horse battery stapl"));
        assert!(!t.matches(b""));
        assert!(!t.matches(b"correct horse battery staple\n"));
    }

    #[test]
    fn short_and_long_tokens_are_refused_with_the_reason() {
        assert!(SharedToken::new("short")
            .unwrap_err()
            .contains("at least 16"));
        assert!(SharedToken::new(&"x".repeat(300))
            .unwrap_err()
            .contains("at most 256"));
    }

    #[test]
    fn an_open_door_admits_everyone_and_a_token_only_its_holder() {
        let mut open = Access::open();
        assert!(open.clients.authenticate(1, b"anything"));
        assert!(open.admits_operator(b""));
        let mut closed = Access::tokens(
            Some(SharedToken::new("client-token-0123456789").unwrap()),
            Some(SharedToken::new("admin-token-0123456789").unwrap()),
        );
        assert!(closed.clients.authenticate(1, b"client-token-0123456789"));
        assert!(!closed.clients.authenticate(1, b"admin-token-0123456789"));
        assert!(closed.admits_operator(b"admin-token-0123456789"));
        assert!(!closed.admits_operator(b"client-token-0123456789"));
    }
}
