//! Critical operations registered over the API. They are kept in the data directory, in
//! `critical-operations.json`, and reports list them beside the catalog file's. A name the
//! catalog defines belongs to the catalog: the API does not register it (one registered before
//! the catalog came to define it is not used, and may be removed).

use std::io::Write;
use std::path::{Path, PathBuf};

use clew_analysis::CriticalOperation;
use clew_analysis::catalog::FROM_API;
use serde::{Deserialize, Serialize};

/// Registered operations at most: every report on them reads the spans once per operation.
pub const MAX_REGISTERED: usize = 100;
pub const MAX_DESCRIPTION_BYTES: usize = 4_096;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Document {
    critical_operations: Vec<CriticalOperation>,
}

pub struct Registry {
    path: PathBuf,
    /// One change at a time: a read, the change and the write.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} critical operations are registered already, the most there may be")]
    Full(usize),
    #[error("the registered critical operations could not be read from {path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("the registered critical operations could not be saved in {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Registry {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join("critical-operations.json"), writing: tokio::sync::Mutex::new(()) }
    }

    /// The registered operations that can be used, and why the others cannot (a file edited
    /// by hand, a filter an older version accepted).
    pub fn read_usable(&self) -> Result<(Vec<CriticalOperation>, Vec<String>), RegistryError> {
        let mut warnings = Vec::new();
        let mut operations = self.read()?;
        operations.retain(|operation| match operation.check() {
            Ok(()) => true,
            Err((field, message)) => {
                warnings.push(format!("the registered critical operation {:?} is not used: {field}: {message}", operation.name));
                false
            }
        });
        Ok((operations, warnings))
    }

    /// The registered operations; none when nothing was registered yet.
    pub fn read(&self) -> Result<Vec<CriticalOperation>, RegistryError> {
        let unreadable = |message: String| RegistryError::Unreadable { path: self.path.display().to_string(), message };
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(unreadable(error.to_string())),
        };
        let document: Document = serde_json::from_slice(&text).map_err(|e| unreadable(e.to_string()))?;
        let mut operations = document.critical_operations;
        for operation in &mut operations {
            operation.source = FROM_API.into();
        }
        Ok(operations)
    }

    /// Adds `operation`, or replaces the one of its name. True when it is new.
    pub async fn put(&self, mut operation: CriticalOperation) -> Result<bool, RegistryError> {
        operation.check().map_err(|(field, message)| RegistryError::Invalid(format!("{field}: {message}")))?;
        if operation.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(RegistryError::Invalid(format!("description: at most {MAX_DESCRIPTION_BYTES} bytes")));
        }
        operation.source = FROM_API.into();
        let _writing = self.writing.lock().await;
        let mut operations = self.read()?;
        let created = match operations.iter().position(|o| o.name == operation.name) {
            Some(at) => {
                operations[at] = operation;
                false
            }
            None if operations.len() >= MAX_REGISTERED => return Err(RegistryError::Full(operations.len())),
            None => {
                operations.push(operation);
                true
            }
        };
        self.write(operations)?;
        Ok(created)
    }

    /// Removes the operation named `name`. False when none is registered by that name.
    pub async fn remove(&self, name: &str) -> Result<bool, RegistryError> {
        let _writing = self.writing.lock().await;
        let mut operations = self.read()?;
        let before = operations.len();
        operations.retain(|o| o.name != name);
        if operations.len() == before {
            return Ok(false);
        }
        self.write(operations)?;
        Ok(true)
    }

    /// Replaces the file whole: written beside it, synced, renamed over it, and the directory
    /// synced, so that a crash leaves the old list or the new one, never a torn file.
    fn write(&self, mut critical_operations: Vec<CriticalOperation>) -> Result<(), RegistryError> {
        for operation in &mut critical_operations {
            operation.source.clear(); // said when read
        }
        let io = |source| RegistryError::Io { path: self.path.display().to_string(), source };
        let text = serde_json::to_vec_pretty(&Document { critical_operations }).expect("operations serialize");
        let temporary = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of its own for each test.
    fn directory(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clew-registry-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn operation(name: &str, traceql: Option<&str>) -> CriticalOperation {
        CriticalOperation {
            name: name.into(),
            service: "web-gateway".into(),
            operation: Some("POST /checkout".into()),
            traceql: traceql.map(str::to_string),
            ..CriticalOperation::default()
        }
    }

    #[tokio::test]
    async fn operations_are_kept_replaced_and_removed() {
        let dir = directory("kept");
        let registry = Registry::new(&dir);
        assert!(registry.read().unwrap().is_empty());
        assert!(registry.put(operation("Checkout", None)).await.unwrap());
        assert!(!registry.put(operation("Checkout", Some("{ span.http.request.method = \"POST\" }"))).await.unwrap());
        assert!(registry.put(operation("Pay", None)).await.unwrap());
        // A second registry on the same directory (a restart) reads what the first wrote.
        let again = Registry::new(&dir).read().unwrap();
        assert_eq!(again.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["Checkout", "Pay"]);
        assert_eq!(again[0].traceql.as_deref(), Some("{ span.http.request.method = \"POST\" }"));
        assert!(again.iter().all(|o| o.source == FROM_API));
        assert!(registry.remove("Checkout").await.unwrap());
        assert!(!registry.remove("Checkout").await.unwrap());
        assert_eq!(registry.read().unwrap().len(), 1);
        // Invalid definitions are refused and change nothing.
        let error = registry.put(operation("Bad", Some("{ } >> { }"))).await.unwrap_err();
        assert!(error.to_string().starts_with("traceql: Bad: "), "{error}");
        assert_eq!(registry.read().unwrap().len(), 1);
        std::fs::write(dir.join("critical-operations.json"), "{ not json").unwrap();
        assert!(matches!(registry.read(), Err(RegistryError::Unreadable { .. })));
        assert!(registry.put(operation("Other", None)).await.is_err(), "a damaged file is not overwritten");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_number_registered_is_bounded() {
        let dir = directory("bounded");
        let registry = Registry::new(&dir);
        for i in 0..MAX_REGISTERED {
            registry.put(operation(&format!("op {i}"), None)).await.unwrap();
        }
        assert!(matches!(registry.put(operation("one more", None)).await, Err(RegistryError::Full(_))));
        assert!(!registry.put(operation("op 7", None)).await.unwrap(), "replacing one is still allowed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
