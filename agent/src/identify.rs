//! Process → model identification (METHODOLOGY §2.6).
//!
//! Owns the rules that say which model a GPU process serves: the user's
//! `[[identify.rules]]` (tried first, in order) and built-in rules for vLLM, TGI,
//! SGLang, llama.cpp, Ollama and Triton. A process that matches nothing is named
//! `unknown:<exe>` with server `unknown`: it is never dropped.
//!
//! Command lines are normalised before the built-ins look at them: a leading
//! `env [VAR=value…]`, `uv run [options]`, `uvx [--from pkg]` and a Python
//! interpreter (`python3 [-u -O …] -m module` or `python3 /path/script`) are peeled
//! off, so `python3 -m vllm.entrypoints.openai.api_server --model M`,
//! `/opt/conda/bin/python3.11 /opt/conda/bin/text-generation-server serve M` and
//! `uv run vllm serve M` are recognised like the bare commands. Flags are read in both
//! `--flag value` and `--flag=value` forms; the last occurrence wins, as argparse does.
//!
//! Model names are kept as the user gave them (`meta-llama/Llama-3.1-8B-Instruct`),
//! trailing slashes trimmed. Local paths are reduced by [`normalize_model_name`]:
//! a Hugging Face cache snapshot (`…/models--org--name/snapshots/<rev>`) becomes
//! `org/name`; any other path becomes its last component, with a `.gguf` extension and a
//! `-00001-of-00003` shard suffix removed. The same function is applied to the model
//! labels of server metrics, so usage and energy meet under one name.
//!
//! Processes that re-title themselves (vLLM's `VLLM::EngineCore`, SGLang's
//! `sglang::scheduler`) carry no model on their command line: pass the process and its
//! ancestors to [`Identifier::identify_lineage`], which names the child after the first
//! ancestor a rule recognises.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use regex::Regex;

/// What the agent knows of a process (read by `sources::procs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFacts {
    /// Process id.
    pub pid: u32,
    /// Basename of `/proc/<pid>/exe`, or `comm` when the link is unreadable.
    pub exe: String,
    /// The NUL-split command line (`/proc/<pid>/cmdline`).
    pub cmdline: Vec<String>,
    /// The environment (`/proc/<pid>/environ`); empty when unreadable.
    pub env: Vec<(String, String)>,
    /// The cgroup path (the unified `0::` entry when present).
    pub cgroup: Option<String>,
    /// The 64-hex container id parsed from the cgroup, when the process runs in one.
    pub container_id: Option<String>,
}

impl ProcessFacts {
    /// The value of environment variable `name`, if the process has it.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The model a process serves, the server kind and the rule that said so.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// Model name (`meta-llama/Llama-3.1-8B-Instruct`, `llama3:8b`, `unknown:python3`).
    pub model: String,
    /// `vllm`, `tgi`, `sglang`, `llamacpp`, `ollama`, `triton`, `config` (or a config
    /// rule's own label) or `unknown`.
    pub server: String,
    /// Human-readable: which rule matched.
    pub rule: String,
}

impl Identity {
    /// Whether one of the user's `[[identify.rules]]` said so (it then wins over what
    /// Kubernetes metadata says).
    pub fn from_config_rule(&self) -> bool {
        self.rule.starts_with(CONFIG_RULE_PREFIX)
    }
}

/// How the description of a `[[identify.rules]]` match starts.
const CONFIG_RULE_PREFIX: &str = "config rule #";

/// One `[[identify.rules]]` entry of the agent's config. Every matcher given must match
/// (at least one is required); the first matching rule wins.
///
/// ```toml
/// [[identify.rules]]
/// cmdline_regex = 'my_server\.py .*--checkpoint[= ]\S*/(?P<name>[^/ ]+)'
/// model = "acme/${name}"
/// server = "acme"
/// ```
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Regex searched in the command line joined with single spaces. Its capture
    /// groups may be used in `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline_regex: Option<String>,
    /// Name of an environment variable the process must have (non-empty). Its value is
    /// the model when `model` is not given, and `${env}` in `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Regex searched in the process's cgroup path. Its capture groups may be used in
    /// `model` (after those of `cmdline_regex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_regex: Option<String>,
    /// Container id the process must run in: the full 64-hex id or a prefix of at least
    /// 12 characters (as `docker ps` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Executable basename the process must have (`/proc/<pid>/exe`, e.g. `python3.11`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The model name: fixed text, or a template using `$1`, `${1}`, `${name}` (capture
    /// groups) and `${env}` (the value of `env`). Default: the first capture group, else
    /// the value of `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The server label given to matching processes. Default: `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// Errors building an [`Identifier`] from config rules.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    /// A regex did not compile.
    #[error("[[identify.rules]] #{rule}: {key} '{pattern}' is not a valid regex ({reason}); fix the pattern in the config file")]
    BadRegex {
        /// 1-based rule number.
        rule: usize,
        /// `cmdline_regex` or `cgroup_regex`.
        key: &'static str,
        /// The pattern as written.
        pattern: String,
        /// The regex crate's explanation.
        reason: String,
    },
    /// A rule with no matcher would match every process.
    #[error("[[identify.rules]] #{rule}: no matcher given; set at least one of 'cmdline_regex', 'env', 'cgroup_regex', 'container_id' or 'exe'")]
    NoMatcher {
        /// 1-based rule number.
        rule: usize,
    },
    /// Nothing to take a model name from.
    #[error("[[identify.rules]] #{rule}: no 'model' given and nothing to take it from; set 'model', or add a capture group to the regex, or set 'env'")]
    NoModel {
        /// 1-based rule number.
        rule: usize,
    },
    /// The `model` template names a capture group or `${env}` that does not exist.
    #[error("[[identify.rules]] #{rule}: model template '{template}' refers to '{reference}', which no regex group (nor 'env') of this rule provides; fix 'model' or the regex")]
    UnknownReference {
        /// 1-based rule number.
        rule: usize,
        /// The template.
        template: String,
        /// The missing reference.
        reference: String,
    },
    /// A container id that cannot match anything.
    #[error("[[identify.rules]] #{rule}: container_id '{value}' must be 12 to 64 lowercase hex characters; copy it from `docker ps --no-trunc`")]
    BadContainerId {
        /// 1-based rule number.
        rule: usize,
        /// The value as written.
        value: String,
    },
}

#[derive(Debug)]
struct CompiledRule {
    cmdline: Option<Regex>,
    env: Option<String>,
    cgroup: Option<Regex>,
    container_id: Option<String>,
    exe: Option<String>,
    model: Option<Vec<TemplatePart>>,
    server: String,
    describe: String,
}

#[derive(Debug, Clone, PartialEq)]
enum TemplatePart {
    Text(String),
    Index(usize),
    Name(String),
    Env,
}

/// Maps processes to models: config rules first (in order), then built-ins.
#[derive(Debug)]
pub struct Identifier {
    rules: Vec<CompiledRule>,
    ollama_dirs: Vec<PathBuf>,
    /// blob digest (`sha256-<hex>`) → model name, or `None` when no manifest names it.
    ollama_cache: Mutex<HashMap<String, Option<String>>>,
}

/// Names a process under which a server re-titles its GPU workers (setproctitle).
const RETITLED: &[(&str, &str)] = &[("VLLM::", "vllm"), ("sglang::", "sglang")];

impl Identifier {
    /// Compiles the config rules. A bad regex is an error naming the rule and pattern.
    pub fn new(rules: &[RuleConfig]) -> Result<Identifier, IdentifyError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            compiled.push(compile_rule(i + 1, r)?);
        }
        Ok(Identifier {
            rules: compiled,
            ollama_dirs: Vec::new(),
            ollama_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Adds Ollama model directories (the `OLLAMA_MODELS` of the host's Ollama, holding
    /// `manifests/` and `blobs/`) searched to name a runner's blob. The blob's own
    /// directory and the process's `OLLAMA_MODELS` are always searched.
    pub fn with_ollama_models_dirs(mut self, dirs: Vec<PathBuf>) -> Identifier {
        self.ollama_dirs = dirs;
        self
    }

    /// The model `p` serves. Never fails: unmatched processes are `unknown:<exe>`.
    pub fn identify(&self, p: &ProcessFacts) -> Identity {
        self.try_identify(p)
            .unwrap_or_else(|| self.retitled(p).unwrap_or_else(|| unknown(p)))
    }

    /// The model the first process of `chain` serves, where `chain` is the process
    /// followed by its ancestors (parent first). The process's own match wins; else the
    /// first ancestor a rule recognises names it (`rule` says "via parent pid N").
    pub fn identify_lineage(&self, chain: &[ProcessFacts]) -> Identity {
        let Some(first) = chain.first() else {
            return Identity {
                model: "unknown:unnamed".into(),
                server: "unknown".into(),
                rule: "no process facts".into(),
            };
        };
        if let Some(id) = self.try_identify(first) {
            return id;
        }
        for ancestor in &chain[1..] {
            if let Some(mut id) = self.try_identify(ancestor) {
                id.rule = format!("{} (via parent pid {})", id.rule, ancestor.pid);
                return id;
            }
        }
        self.retitled(first).unwrap_or_else(|| unknown(first))
    }

    fn try_identify(&self, p: &ProcessFacts) -> Option<Identity> {
        self.rules
            .iter()
            .find_map(|r| apply_rule(r, p))
            .or_else(|| self.builtin(p))
    }

    fn retitled(&self, p: &ProcessFacts) -> Option<Identity> {
        let title = p.cmdline.first()?;
        RETITLED.iter().find_map(|(prefix, server)| {
            title.starts_with(prefix).then(|| Identity {
                model: format!("unknown:{server}"),
                server: (*server).to_string(),
                rule: format!("built-in {server}: worker '{title}' whose parent is not readable"),
            })
        })
    }

    fn builtin(&self, p: &ProcessFacts) -> Option<Identity> {
        let inv = Invocation::parse(&p.cmdline)?;
        let prog = inv.program.as_str();
        let args = inv.args;
        match prog {
            "vllm" | "vllm.entrypoints.cli.main" => vllm_cli(args),
            "vllm.entrypoints.openai.api_server" | "vllm.entrypoints.api_server" => {
                vllm_module(args)
            }
            "text-generation-launcher" => Some(tgi_launcher(args, p)),
            "text-generation-server" => tgi_server(args),
            "sglang.launch_server" | "sglang_router.launch_server" => sglang(args),
            "sglang" if args.first().map(String::as_str) == Some("serve") => sglang(&args[1..]),
            "llama-server" | "llama-cli" | "server" if looks_like_llamacpp(prog, args) => {
                llamacpp(args, p)
            }
            "ollama" if args.first().map(String::as_str) == Some("runner") => {
                Some(self.ollama(&args[1..], p))
            }
            "ollama_llama_server" => {
                let rest = match args.first().map(String::as_str) {
                    Some("runner") => &args[1..],
                    _ => args,
                };
                Some(self.ollama(rest, p))
            }
            "tritonserver" => Some(triton(args)),
            _ => None,
        }
    }

    fn ollama(&self, args: &[String], p: &ProcessFacts) -> Identity {
        let Some(blob) = flag_value(args, &["--model", "-m"]) else {
            return Identity {
                model: "unknown:ollama".into(),
                server: "ollama".into(),
                rule: "built-in ollama: runner without --model".into(),
            };
        };
        let blob_path = Path::new(blob);
        let digest = blob_path
            .file_name()
            .map(|f| f.to_string_lossy().replace(':', "-"))
            .unwrap_or_default();
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(models) = blob_path.parent().and_then(Path::parent) {
            dirs.push(models.to_path_buf());
        }
        if let Some(m) = p.env_var("OLLAMA_MODELS") {
            dirs.push(PathBuf::from(m));
        }
        dirs.extend(self.ollama_dirs.iter().cloned());
        let named = self.ollama_name(&digest, &dirs);
        match named {
            Some(name) => Identity {
                model: name,
                server: "ollama".into(),
                rule: "built-in ollama: runner --model blob named by a manifest".into(),
            },
            None => {
                let hex = digest.strip_prefix("sha256-").unwrap_or(&digest);
                let short: String = hex.chars().take(12).collect();
                Identity {
                    model: format!("ollama:sha256-{short}"),
                    server: "ollama".into(),
                    rule: "built-in ollama: runner --model blob (no readable manifest names it)"
                        .into(),
                }
            }
        }
    }

    fn ollama_name(&self, digest: &str, dirs: &[PathBuf]) -> Option<String> {
        if digest.is_empty() {
            return None;
        }
        if let Ok(cache) = self.ollama_cache.lock() {
            if let Some(hit) = cache.get(digest) {
                return hit.clone();
            }
        }
        let wanted = digest.replacen('-', ":", 1);
        let mut names: Vec<String> = Vec::new();
        for d in dirs {
            ollama_manifest_names(&d.join("manifests"), &wanted, &mut names);
        }
        names.sort();
        let found = names.into_iter().next();
        if let Ok(mut cache) = self.ollama_cache.lock() {
            cache.insert(digest.to_string(), found.clone());
        }
        found
    }
}

fn unknown(p: &ProcessFacts) -> Identity {
    let exe = if !p.exe.is_empty() {
        p.exe.clone()
    } else {
        p.cmdline
            .first()
            .map(|a| basename(a).to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unnamed".into())
    };
    Identity {
        model: format!("unknown:{exe}"),
        server: "unknown".into(),
        rule: "no rule matched".into(),
    }
}

// ---------------------------------------------------------------- config rules

fn compile_rule(number: usize, r: &RuleConfig) -> Result<CompiledRule, IdentifyError> {
    let compile =
        |key: &'static str, pat: &Option<String>| -> Result<Option<Regex>, IdentifyError> {
            pat.as_ref()
                .map(|p| {
                    Regex::new(p).map_err(|e| IdentifyError::BadRegex {
                        rule: number,
                        key,
                        pattern: p.clone(),
                        reason: e
                            .to_string()
                            .lines()
                            .last()
                            .unwrap_or("")
                            .trim()
                            .to_string(),
                    })
                })
                .transpose()
        };
    let cmdline = compile("cmdline_regex", &r.cmdline_regex)?;
    let cgroup = compile("cgroup_regex", &r.cgroup_regex)?;
    let env = r.env.clone().filter(|e| !e.is_empty());
    let exe = r.exe.clone().filter(|e| !e.is_empty());
    let container_id = match &r.container_id {
        Some(c) => {
            let ok = (12..=64).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(IdentifyError::BadContainerId {
                    rule: number,
                    value: c.clone(),
                });
            }
            Some(c.clone())
        }
        None => None,
    };
    if cmdline.is_none()
        && env.is_none()
        && cgroup.is_none()
        && container_id.is_none()
        && exe.is_none()
    {
        return Err(IdentifyError::NoMatcher { rule: number });
    }
    let has_group = |re: &Option<Regex>| re.as_ref().is_some_and(|re| re.captures_len() > 1);
    let model = match &r.model {
        Some(t) => {
            let parts = parse_template(t);
            for part in &parts {
                let known = match part {
                    TemplatePart::Text(_) => true,
                    TemplatePart::Env => env.is_some(),
                    TemplatePart::Index(i) => [&cmdline, &cgroup]
                        .iter()
                        .any(|re| re.as_ref().is_some_and(|re| *i < re.captures_len())),
                    TemplatePart::Name(n) => [&cmdline, &cgroup].iter().any(|re| {
                        re.as_ref()
                            .is_some_and(|re| re.capture_names().any(|c| c == Some(n.as_str())))
                    }),
                };
                if !known {
                    let reference = match part {
                        TemplatePart::Index(i) => format!("${i}"),
                        TemplatePart::Name(n) => format!("${{{n}}}"),
                        _ => "${env}".to_string(),
                    };
                    return Err(IdentifyError::UnknownReference {
                        rule: number,
                        template: t.clone(),
                        reference,
                    });
                }
            }
            Some(parts)
        }
        None => {
            if !has_group(&cmdline) && !has_group(&cgroup) && env.is_none() {
                return Err(IdentifyError::NoModel { rule: number });
            }
            None
        }
    };
    let mut what = Vec::new();
    if let Some(re) = &r.cmdline_regex {
        what.push(format!("cmdline_regex '{re}'"));
    }
    if let Some(e) = &env {
        what.push(format!("env {e}"));
    }
    if let Some(re) = &r.cgroup_regex {
        what.push(format!("cgroup_regex '{re}'"));
    }
    if let Some(c) = &container_id {
        what.push(format!("container_id {c}"));
    }
    if let Some(e) = &exe {
        what.push(format!("exe {e}"));
    }
    Ok(CompiledRule {
        cmdline,
        env,
        cgroup,
        container_id,
        exe,
        model,
        server: r
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "config".into()),
        describe: format!("{CONFIG_RULE_PREFIX}{number} ({})", what.join(", ")),
    })
}

/// Parses `$1`, `${1}`, `${name}`, `${env}` and `$$` (a literal `$`).
fn parse_template(t: &str) -> Vec<TemplatePart> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = t.chars().peekable();
    let flush = |text: &mut String, parts: &mut Vec<TemplatePart>| {
        if !text.is_empty() {
            parts.push(TemplatePart::Text(std::mem::take(text)));
        }
    };
    while let Some(c) = chars.next() {
        if c != '$' {
            text.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                text.push('$');
            }
            Some('{') => {
                chars.next();
                let mut name = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    name.push(c);
                }
                flush(&mut text, &mut parts);
                parts.push(reference(&name));
            }
            Some(d) if d.is_ascii_digit() => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                flush(&mut text, &mut parts);
                parts.push(reference(&digits));
            }
            _ => text.push('$'),
        }
    }
    flush(&mut text, &mut parts);
    parts
}

fn reference(name: &str) -> TemplatePart {
    if name == "env" {
        TemplatePart::Env
    } else if let Ok(i) = name.parse::<usize>() {
        TemplatePart::Index(i)
    } else {
        TemplatePart::Name(name.to_string())
    }
}

fn apply_rule(r: &CompiledRule, p: &ProcessFacts) -> Option<Identity> {
    if let Some(exe) = &r.exe {
        if &p.exe != exe {
            return None;
        }
    }
    if let Some(want) = &r.container_id {
        if !p
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with(want.as_str()))
        {
            return None;
        }
    }
    let env_value = match &r.env {
        Some(name) => Some(p.env_var(name).filter(|v| !v.is_empty())?),
        None => None,
    };
    let joined;
    let cmd_caps = match &r.cmdline {
        Some(re) => {
            joined = p.cmdline.join(" ");
            Some(re.captures(&joined)?)
        }
        None => None,
    };
    let cg_caps = match &r.cgroup {
        Some(re) => Some(re.captures(p.cgroup.as_deref()?)?),
        None => None,
    };
    let group = |part: &TemplatePart| -> Option<String> {
        [&cmd_caps, &cg_caps].iter().find_map(|caps| {
            let caps = caps.as_ref()?;
            let m = match part {
                TemplatePart::Index(i) => caps.get(*i),
                TemplatePart::Name(n) => caps.name(n),
                _ => None,
            }?;
            Some(m.as_str().to_string())
        })
    };
    let model = match &r.model {
        Some(parts) => {
            let mut s = String::new();
            for part in parts {
                match part {
                    TemplatePart::Text(t) => s.push_str(t),
                    TemplatePart::Env => s.push_str(env_value.unwrap_or("")),
                    other => s.push_str(&group(other).unwrap_or_default()),
                }
            }
            s
        }
        None => group(&TemplatePart::Index(1)).or_else(|| env_value.map(str::to_string))?,
    };
    let model = model.trim().trim_end_matches('/').to_string();
    if model.is_empty() {
        return None;
    }
    Some(Identity {
        model,
        server: r.server.clone(),
        rule: r.describe.clone(),
    })
}

// ---------------------------------------------------------------- argv handling

/// A command line with wrappers and interpreters peeled off.
#[derive(Debug, PartialEq)]
pub struct Invocation<'a> {
    /// Basename of the program, or the module name of `python -m module`.
    pub program: String,
    /// Arguments after the program.
    pub args: &'a [String],
}

impl<'a> Invocation<'a> {
    /// Peels `env`, `uv run`, `uvx` and Python interpreters off `argv`.
    pub fn parse(argv: &'a [String]) -> Option<Invocation<'a>> {
        let mut rest = argv;
        // Bounded: each step consumes at least one argument.
        for _ in 0..8 {
            let first = rest.first()?;
            let prog = basename(first);
            match prog {
                "env" => {
                    rest = &rest[1..];
                    while rest
                        .first()
                        .is_some_and(|a| a.contains('=') || a.starts_with('-'))
                    {
                        rest = &rest[1..];
                    }
                }
                "uv" if rest.get(1).map(String::as_str) == Some("run") => {
                    rest = skip_options(&rest[2..], UV_VALUE_FLAGS);
                }
                "uvx" => rest = skip_options(&rest[1..], UV_VALUE_FLAGS),
                p if is_python(p) => {
                    let mut i = 1;
                    while let Some(a) = rest.get(i) {
                        match a.as_str() {
                            "-m" => {
                                let module = rest.get(i + 1)?;
                                return Some(Invocation {
                                    program: module.clone(),
                                    args: &rest[i + 2..],
                                });
                            }
                            "-c" => return None,
                            "-X" | "-W" | "--check-hash-based-pycs" => i += 2,
                            s if s.starts_with("-m") && s.len() > 2 => {
                                return Some(Invocation {
                                    program: s[2..].to_string(),
                                    args: &rest[i + 1..],
                                });
                            }
                            s if s.starts_with('-') => i += 1,
                            _ => break,
                        }
                    }
                    rest = rest.get(i..)?;
                }
                _ => {
                    return Some(Invocation {
                        program: prog.to_string(),
                        args: &rest[1..],
                    })
                }
            }
        }
        None
    }
}

const UV_VALUE_FLAGS: &[&str] = &[
    "--with",
    "--with-requirements",
    "--with-editable",
    "--python",
    "-p",
    "--project",
    "--directory",
    "--env-file",
    "--from",
    "--package",
    "--index",
    "--extra",
    "--group",
];

fn skip_options<'a>(mut args: &'a [String], value_flags: &[&str]) -> &'a [String] {
    while let Some(a) = args.first() {
        if a == "--" {
            return &args[1..];
        }
        if !a.starts_with('-') {
            break;
        }
        let takes_value = value_flags.contains(&a.as_str());
        args = &args[if takes_value { 2.min(args.len()) } else { 1 }..];
    }
    args
}

fn is_python(prog: &str) -> bool {
    let Some(rest) = prog.strip_prefix("python") else {
        return false;
    };
    rest.is_empty() || rest.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn basename(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    t.rsplit('/').next().unwrap_or(t)
}

/// The value of the last occurrence of any of `names` (`--f v`, `--f=v`, `-m v`).
pub fn flag_value<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            break;
        }
        for n in names {
            if a == *n {
                if let Some(v) = args.get(i + 1) {
                    found = Some(v.as_str());
                    i += 1;
                }
                break;
            }
            if let Some(v) = a.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                found = Some(v);
                break;
            }
        }
        i += 1;
    }
    found
}

/// Every value of any of `names`, in order (repeatable flags).
pub fn flag_values<'a>(args: &'a [String], names: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        for n in names {
            if a == *n {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.as_str());
                    i += 1;
                }
                break;
            }
            if let Some(v) = a.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                out.push(v);
                break;
            }
        }
        i += 1;
    }
    out
}

/// Whether the boolean flag `name` is present (`--metrics`, `--enable-metrics`).
pub fn has_flag(args: &[String], name: &str) -> bool {
    args.iter()
        .take_while(|a| a.as_str() != "--")
        .any(|a| a == name || a.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
}

/// Reduces a model argument to the name inferwatt reports (see the module header):
/// hub ids and URLs are kept, trailing slashes trimmed; local paths are reduced.
pub fn normalize_model_name(raw: &str) -> String {
    let trimmed = raw.trim();
    let t = trimmed.trim_end_matches('/');
    if t.is_empty() {
        return trimmed.to_string();
    }
    let is_path = t.starts_with('/')
        || t.starts_with("./")
        || t.starts_with("../")
        || t.starts_with("~/")
        || t.ends_with(".gguf")
        || t.contains('\\');
    if !is_path {
        return t.to_string();
    }
    let parts: Vec<&str> = t.split('/').collect();
    // Hugging Face cache: …/models--org--name/snapshots/<rev>
    if let Some(pos) = parts.iter().rposition(|p| p.starts_with("models--")) {
        let repo = &parts[pos]["models--".len()..];
        return repo.replacen("--", "/", 1);
    }
    let last = parts.last().copied().unwrap_or(t);
    gguf_stem(last)
}

fn gguf_stem(file: &str) -> String {
    let stem = file.strip_suffix(".gguf").unwrap_or(file);
    // split GGUF: name-00001-of-00003
    if let Some(idx) = stem.rfind("-of-") {
        let (head, tail) = stem.split_at(idx);
        let tail = &tail[4..];
        if tail.len() == 5 && tail.bytes().all(|b| b.is_ascii_digit()) {
            if let Some(dash) = head.rfind('-') {
                let num = &head[dash + 1..];
                if num.len() == 5 && num.bytes().all(|b| b.is_ascii_digit()) {
                    return head[..dash].to_string();
                }
            }
        }
    }
    stem.to_string()
}

// ---------------------------------------------------------------- built-ins

fn built(server: &str, model: &str, rule: String) -> Option<Identity> {
    let model = normalize_model_name(model);
    (!model.is_empty()).then(|| Identity {
        model,
        server: server.to_string(),
        rule,
    })
}

fn vllm_cli(args: &[String]) -> Option<Identity> {
    if args.first().map(String::as_str) != Some("serve") {
        return None;
    }
    let rest = &args[1..];
    if let Some(name) = flag_value(rest, &["--served-model-name"]) {
        return built(
            "vllm",
            name,
            "built-in vllm: `vllm serve … --served-model-name NAME`".into(),
        );
    }
    if let Some(m) = rest.first().filter(|a| !a.starts_with('-')) {
        return built("vllm", m, "built-in vllm: `vllm serve MODEL`".into());
    }
    if let Some(m) = flag_value(rest, &["--model"]) {
        return built(
            "vllm",
            m,
            "built-in vllm: `vllm serve --model MODEL`".into(),
        );
    }
    Some(Identity {
        model: "unknown:vllm".into(),
        server: "vllm".into(),
        rule: "built-in vllm: `vllm serve` without a model argument (config file?)".into(),
    })
}

fn vllm_module(args: &[String]) -> Option<Identity> {
    if let Some(name) = flag_value(args, &["--served-model-name"]) {
        return built(
            "vllm",
            name,
            "built-in vllm: api_server --served-model-name NAME".into(),
        );
    }
    match flag_value(args, &["--model"]) {
        Some(m) => built("vllm", m, "built-in vllm: api_server --model MODEL".into()),
        None => Some(Identity {
            model: "unknown:vllm".into(),
            server: "vllm".into(),
            rule: "built-in vllm: api_server without --model".into(),
        }),
    }
}

/// TGI's launcher default when neither `--model-id` nor `MODEL_ID` is given.
const TGI_DEFAULT_MODEL: &str = "bigscience/bloom-560m";

fn tgi_launcher(args: &[String], p: &ProcessFacts) -> Identity {
    let (model, rule) = if let Some(m) = flag_value(args, &["--model-id"]) {
        (
            m.to_string(),
            "built-in tgi: `text-generation-launcher --model-id MODEL`",
        )
    } else if let Some(m) = p.env_var("MODEL_ID").filter(|m| !m.is_empty()) {
        (
            m.to_string(),
            "built-in tgi: text-generation-launcher with env MODEL_ID",
        )
    } else {
        (
            TGI_DEFAULT_MODEL.to_string(),
            "built-in tgi: text-generation-launcher default model",
        )
    };
    Identity {
        model: normalize_model_name(&model),
        server: "tgi".into(),
        rule: rule.into(),
    }
}

fn tgi_server(args: &[String]) -> Option<Identity> {
    if args.first().map(String::as_str) != Some("serve") {
        return None;
    }
    let m = args.get(1).filter(|a| !a.starts_with('-'))?;
    built(
        "tgi",
        m,
        "built-in tgi: shard `text-generation-server serve MODEL`".into(),
    )
}

fn sglang(args: &[String]) -> Option<Identity> {
    if let Some(name) = flag_value(args, &["--served-model-name"]) {
        return built(
            "sglang",
            name,
            "built-in sglang: --served-model-name NAME".into(),
        );
    }
    match flag_value(args, &["--model-path", "--model"]) {
        Some(m) => built(
            "sglang",
            m,
            "built-in sglang: launch_server --model-path MODEL".into(),
        ),
        None => Some(Identity {
            model: "unknown:sglang".into(),
            server: "sglang".into(),
            rule: "built-in sglang: launch_server without --model-path".into(),
        }),
    }
}

fn looks_like_llamacpp(prog: &str, args: &[String]) -> bool {
    // `server` was llama.cpp's binary name before 2024; require a model flag for it.
    prog != "server" || flag_value(args, &["-m", "--model", "-hf", "--hf-repo"]).is_some()
}

fn llamacpp(args: &[String], p: &ProcessFacts) -> Option<Identity> {
    let alias = flag_value(args, &["--alias", "-a"]).or_else(|| p.env_var("LLAMA_ARG_ALIAS"));
    if let Some(a) = alias.filter(|a| !a.is_empty()) {
        return built(
            "llamacpp",
            a,
            "built-in llamacpp: llama-server --alias NAME".into(),
        );
    }
    if let Some(m) = flag_value(args, &["-m", "--model"]).or_else(|| p.env_var("LLAMA_ARG_MODEL")) {
        let stem = gguf_stem(basename(m));
        return built(
            "llamacpp",
            &stem,
            "built-in llamacpp: llama-server -m FILE (file stem)".into(),
        );
    }
    if let Some(r) =
        flag_value(args, &["-hf", "-hfr", "--hf-repo"]).or_else(|| p.env_var("LLAMA_ARG_HF_REPO"))
    {
        return built(
            "llamacpp",
            r,
            "built-in llamacpp: llama-server -hf REPO".into(),
        );
    }
    if let Some(u) = flag_value(args, &["-mu", "--model-url"]) {
        let stem = gguf_stem(basename(u));
        return built(
            "llamacpp",
            &stem,
            "built-in llamacpp: llama-server --model-url URL (file stem)".into(),
        );
    }
    Some(Identity {
        model: "unknown:llamacpp".into(),
        server: "llamacpp".into(),
        rule: "built-in llamacpp: llama-server without a model argument".into(),
    })
}

fn triton(args: &[String]) -> Identity {
    let loads: Vec<&str> = flag_values(args, &["--load-model"]);
    if let [one] = loads.as_slice() {
        if *one != "*" && !one.is_empty() {
            return Identity {
                model: one.to_string(),
                server: "triton".into(),
                rule: "built-in triton: tritonserver --load-model NAME (exactly one)".into(),
            };
        }
    }
    let repos: Vec<&str> = flag_values(args, &["--model-repository", "--model-store"]);
    if repos.is_empty() {
        return Identity {
            model: "unknown:triton".into(),
            server: "triton".into(),
            rule: "built-in triton: tritonserver without --model-repository".into(),
        };
    }
    let names: Vec<&str> = repos.iter().map(|r| basename(r)).collect();
    Identity {
        model: format!("triton:{}", names.join("+")),
        server: "triton".into(),
        rule: "built-in triton: every model of --model-repository DIR (named after DIR)".into(),
    }
}

/// Collects the names of manifests under `dir` whose model layer is `digest`
/// (`sha256:<hex>`). Layout: `manifests/<host>/<namespace>/<model>/<tag>`.
fn ollama_manifest_names(dir: &Path, digest: &str, out: &mut Vec<String>) {
    fn walk(dir: &Path, depth: usize, files: &mut Vec<(Vec<String>, PathBuf)>, prefix: &[String]) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let mut path_parts = prefix.to_vec();
            path_parts.push(name);
            let path = e.path();
            if path.is_dir() {
                if depth < 4 {
                    walk(&path, depth + 1, files, &path_parts);
                }
            } else if path_parts.len() == 4 {
                files.push((path_parts, path));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, 1, &mut files, &[]);
    for (parts, path) in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let has = json
            .get("layers")
            .and_then(|l| l.as_array())
            .is_some_and(|layers| {
                layers.iter().any(|l| {
                    l.get("mediaType").and_then(|m| m.as_str())
                        == Some("application/vnd.ollama.image.model")
                        && l.get("digest").and_then(|d| d.as_str()) == Some(digest)
                })
            });
        if has {
            let (host, ns, model, tag) = (&parts[0], &parts[1], &parts[2], &parts[3]);
            let name = if host == "registry.ollama.ai" && ns == "library" {
                format!("{model}:{tag}")
            } else if host == "registry.ollama.ai" {
                format!("{ns}/{model}:{tag}")
            } else {
                format!("{host}/{ns}/{model}:{tag}")
            };
            out.push(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn peels_wrappers() {
        let a =
            argv("uv run --with vllm python3 -u -m vllm.entrypoints.openai.api_server --model m");
        let inv = Invocation::parse(&a).expect("parsed");
        assert_eq!(inv.program, "vllm.entrypoints.openai.api_server");
        assert_eq!(inv.args, &a[8..]);
        let a = argv("env CUDA_VISIBLE_DEVICES=0 /usr/bin/python3.11 /usr/local/bin/vllm serve m");
        let inv = Invocation::parse(&a).expect("parsed");
        assert_eq!(inv.program, "vllm");
        assert_eq!(inv.args, &a[4..]);
        assert!(Invocation::parse(&argv("python3 -c print(1)")).is_none());
    }

    #[test]
    fn template_parsing() {
        assert_eq!(
            parse_template("a/${name}-$1$$x${env}"),
            vec![
                TemplatePart::Text("a/".into()),
                TemplatePart::Name("name".into()),
                TemplatePart::Text("-".into()),
                TemplatePart::Index(1),
                TemplatePart::Text("$x".into()),
                TemplatePart::Env,
            ]
        );
    }

    #[test]
    fn gguf_shards() {
        assert_eq!(
            gguf_stem("Qwen3-235B-Q4_K_M-00001-of-00003.gguf"),
            "Qwen3-235B-Q4_K_M"
        );
        assert_eq!(gguf_stem("llama-2-7b.Q4_K_M.gguf"), "llama-2-7b.Q4_K_M");
        assert_eq!(gguf_stem("x-of-y"), "x-of-y");
    }
}
