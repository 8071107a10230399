//! How enum fields read in JSON: as the words the command line uses, not as numbers.

use serde::Serializer;

use crate::v1::{ItemState, KeyType};

/// `p256`, `rsa2048`; an unknown value as its number.
pub fn key_type<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
    match KeyType::try_from(*value) {
        Ok(KeyType::P256) => s.serialize_str("p256"),
        Ok(KeyType::Rsa2048) => s.serialize_str("rsa2048"),
        Err(_) => s.serialize_i32(*value),
    }
}

/// `applied`, `pending`, `failed`.
pub fn item_state<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
    let state = ItemState::try_from(*value).unwrap_or(ItemState::Failed);
    s.serialize_str(state.word())
}

#[cfg(test)]
mod tests {
    use crate::v1::*;

    #[test]
    fn messages_read_as_their_fields_with_words_for_enums_and_oneofs() {
        let spec = CertificateSpec {
            name: "www".into(),
            key_type: KeyType::Rsa2048 as i32,
            ..Default::default()
        };
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            (v["name"].as_str(), v["key_type"].as_str()),
            (Some("www"), Some("rsa2048"))
        );
        let tls = SiteTls {
            mode: Some(site_tls::Mode::Certificate("www".into())),
        };
        assert_eq!(
            serde_json::to_value(&tls).unwrap(),
            serde_json::json!({"mode": {"certificate": "www"}})
        );
        let item = ItemResult::pending("site", "www", "waiting");
        assert_eq!(serde_json::to_value(&item).unwrap()["state"], "pending");
    }
}
