//! Item results, as an agent acknowledges a desired state: built with one constructor per
//! state, read back as `kind/name` and a state word.

use crate::v1::{ItemResult, ItemState};

impl ItemResult {
    fn with(kind: &str, name: &str, state: ItemState, message: String) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            state: state as i32,
            message,
        }
    }

    /// On the host as desired.
    pub fn applied(kind: &str, name: &str) -> Self {
        Self::with(kind, name, ItemState::Applied, String::new())
    }

    /// Waiting for something on its way.
    pub fn pending(kind: &str, name: &str, why: impl ToString) -> Self {
        Self::with(kind, name, ItemState::Pending, why.to_string())
    }

    /// Not applied, and why.
    pub fn failed(kind: &str, name: &str, why: impl ToString) -> Self {
        Self::with(kind, name, ItemState::Failed, why.to_string())
    }

    /// `kind/name`, or `kind` alone for host-wide items.
    pub fn item(&self) -> String {
        if self.name.is_empty() {
            self.kind.clone()
        } else {
            format!("{}/{}", self.kind, self.name)
        }
    }

    /// The state, an unknown value read as failed.
    pub fn item_state(&self) -> ItemState {
        match ItemState::try_from(self.state) {
            Ok(ItemState::Unspecified) | Err(_) => ItemState::Failed,
            Ok(s) => s,
        }
    }

    /// Whether it is applied.
    pub fn is_applied(&self) -> bool {
        self.item_state() == ItemState::Applied
    }
}

impl ItemState {
    /// The state as people and JSON read it: `applied`, `pending` or `failed`.
    pub fn word(self) -> &'static str {
        match self {
            ItemState::Applied => "applied",
            ItemState::Pending => "pending",
            ItemState::Failed | ItemState::Unspecified => "failed",
        }
    }

    /// Reads [`ItemState::word`] back.
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "applied" => Some(ItemState::Applied),
            "pending" => Some(ItemState::Pending),
            "failed" => Some(ItemState::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_name_themselves_and_their_state() {
        let a = ItemResult::applied("site", "www");
        assert_eq!((a.item(), a.is_applied()), ("site/www".into(), true));
        let p = ItemResult::pending("certificate", "www", "waiting");
        assert_eq!(
            (p.item_state().word(), p.message.as_str()),
            ("pending", "waiting")
        );
        let f = ItemResult::failed("caddy", "", "cannot read");
        assert_eq!(f.item(), "caddy");
        let odd = ItemResult {
            state: 42,
            ..a.clone()
        };
        assert_eq!(odd.item_state(), ItemState::Failed);
        for s in [ItemState::Applied, ItemState::Pending, ItemState::Failed] {
            assert_eq!(ItemState::from_word(s.word()), Some(s));
        }
    }
}
