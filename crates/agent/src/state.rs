//! The last desired state the agent accepted, persisted (0600) so the host is put back in shape
//! at start without the controller, and the apply step that turns it into effects.

use gatehouse_proto::v1::DesiredState;
use prost::Message;

use crate::config::Paths;
use crate::host::files::{self, FileError};

/// The persisted state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path} is damaged ({detail}); it will be replaced by the controller's next state")]
    Damaged {
        path: std::path::PathBuf,
        detail: String,
    },
}

/// Reads the persisted desired state, if any.
pub fn load(paths: &Paths) -> Result<Option<DesiredState>, StateError> {
    let path = paths.desired_state();
    match std::fs::read(&path) {
        Ok(bytes) => DesiredState::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| StateError::Damaged {
                path,
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError {
            action: "cannot read",
            path,
            source,
        }
        .into()),
    }
}

/// Persists `state` atomically (0600).
pub fn save(paths: &Paths, state: &DesiredState) -> Result<(), StateError> {
    files::ensure_dir(&paths.state_dir, 0o700)?;
    files::write_atomic(&paths.desired_state(), &state.encode_to_vec(), 0o600, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        assert_eq!(load(&paths).unwrap(), None);
        let state = DesiredState {
            generation: 7,
            report_interval_seconds: 30,
            ..Default::default()
        };
        save(&paths, &state).unwrap();
        assert_eq!(load(&paths).unwrap(), Some(state));
        std::fs::write(paths.desired_state(), b"\xff\xff\xff").unwrap();
        assert!(matches!(load(&paths), Err(StateError::Damaged { .. })));
    }
}
