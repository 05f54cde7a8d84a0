//! Pod metadata → model.
//!
//! Names the model a pod serves from what Kubernetes already knows of it, for processes
//! whose command line says nothing (a custom server, a re-titled worker). The user's
//! `[[kubernetes.pod_rules]]` are tried first, in order; then two built-ins:
//!
//! 1. **KServe**: label `serving.kserve.io/inferenceservice` (KServe puts it on every
//!    predictor, transformer and explainer pod; `serving.kubeflow.org/inferenceservice`
//!    on KFServing's) → model = the InferenceService's name, server `kserve`.
//! 2. **Recommended labels**: `app.kubernetes.io/instance` → model,
//!    `app.kubernetes.io/name` → server. Kubernetes defines `name` as the application
//!    (`vllm`) and `instance` as "a unique name identifying the instance of an
//!    application" — the Helm release, which platform teams name after what they deploy
//!    (`helm install llama-8b vllm/…` gives `name=vllm`, `instance=llama-8b`). So the
//!    instance is the model and the application is the server. `name` alone names no
//!    model and does not match; neither does an instance equal to the name (`vllm`/`vllm`
//!    says nothing beyond the application); `instance` alone gives server `kubernetes`.
//!
//! Independent of [`crate::identify`]'s types, so the caller decides which wins.

use super::kubelet::PodMeta;

/// How errors name the config section these rules come from.
const SECTION: &str = "[[kubernetes.pod_rules]]";

/// One `[[kubernetes.pod_rules]]` entry of the agent's config. Every matcher given must match
/// (at least one is required); the first matching rule wins.
///
/// ```toml
/// [[kubernetes.pod_rules]]
/// label = "acme.com/model"
/// model = "acme/${value}"
/// server = "acme-serve"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PodRule {
    /// A label key the pod must have, with a non-empty value: `${value}` (and
    /// `${label}`) in `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// An annotation key the pod must have, with a non-empty value: `${annotation}` in
    /// `model`, and `${value}` when no `label` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    /// The namespace the pod must be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The model name: fixed text or a template using `${value}`, `${label}`,
    /// `${annotation}`, `${namespace}`, `${pod}` (the pod's name), `${workload}` (its
    /// controller's name, e.g. the Deployment) and `$$` (a literal `$`).
    pub model: String,
    /// The server label given to matching pods. Default: `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// Errors compiling `[[kubernetes.pod_rules]]`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodRuleError {
    /// A rule with no matcher would match every pod.
    #[error("{SECTION} #{rule}: no matcher given; set at least one of 'label', 'annotation' or 'namespace'")]
    NoMatcher {
        /// 1-based rule number.
        rule: usize,
    },
    /// An empty `model`.
    #[error(
        "{SECTION} #{rule}: 'model' is empty; set it to a name or a template such as '${{value}}'"
    )]
    EmptyModel {
        /// 1-based rule number.
        rule: usize,
    },
    /// A label or annotation key Kubernetes would not accept, so no pod can have it.
    #[error("{SECTION} #{rule}: {key} '{value}' is not a Kubernetes key; write '[prefix/]name' with a DNS prefix and a name of at most 63 letters, digits, '-', '_' or '.' (e.g. 'serving.kserve.io/inferenceservice')")]
    BadKey {
        /// 1-based rule number.
        rule: usize,
        /// `label` or `annotation`.
        key: &'static str,
        /// The key as written.
        value: String,
    },
    /// A namespace name Kubernetes would not accept.
    #[error("{SECTION} #{rule}: namespace '{value}' is not a namespace name; use at most 63 lowercase letters, digits and '-', as `kubectl get ns` prints it")]
    BadNamespace {
        /// 1-based rule number.
        rule: usize,
        /// The value as written.
        value: String,
    },
    /// The template refers to something this rule does not provide.
    #[error("{SECTION} #{rule}: model template '{template}' refers to '{reference}', {why}; fix 'model'")]
    UnknownReference {
        /// 1-based rule number.
        rule: usize,
        /// The template.
        template: String,
        /// The reference as written (`${label}`).
        reference: String,
        /// Why it cannot be filled.
        why: &'static str,
    },
    /// A `${` without its `}`.
    #[error("{SECTION} #{rule}: model template '{template}' has a '${{' without a closing '}}'; close it, or write '$$' for a literal '$'")]
    Unterminated {
        /// 1-based rule number.
        rule: usize,
        /// The template.
        template: String,
    },
}

/// A validated [`PodRule`], ready for [`model_from_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPodRule {
    label: Option<String>,
    annotation: Option<String>,
    namespace: Option<String>,
    model: Vec<Part>,
    server: String,
    describe: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value,
    Label,
    Annotation,
    Namespace,
    Pod,
    Workload,
}

/// The model a pod serves, the server kind and the rule that said so.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodIdentity {
    /// Model name (`llama3`, `acme/llama-8b`).
    pub model: String,
    /// `kserve`, the `app.kubernetes.io/name` value, `kubernetes`, `config` or a config
    /// rule's own `server`.
    pub server: String,
    /// Human-readable: which rule matched, with the metadata it read.
    pub rule: String,
}

impl PodRule {
    /// Validates the rule; `number` is its 1-based position, used in errors.
    pub fn compile(&self, number: usize) -> Result<CompiledPodRule, PodRuleError> {
        let label = self.label.clone().filter(|s| !s.is_empty());
        let annotation = self.annotation.clone().filter(|s| !s.is_empty());
        let namespace = self.namespace.clone().filter(|s| !s.is_empty());
        if label.is_none() && annotation.is_none() && namespace.is_none() {
            return Err(PodRuleError::NoMatcher { rule: number });
        }
        for (key, value) in [("label", &label), ("annotation", &annotation)] {
            if let Some(v) = value {
                if !is_k8s_key(v) {
                    return Err(PodRuleError::BadKey {
                        rule: number,
                        key,
                        value: v.clone(),
                    });
                }
            }
        }
        if let Some(ns) = &namespace {
            if !is_dns_label(ns) {
                return Err(PodRuleError::BadNamespace {
                    rule: number,
                    value: ns.clone(),
                });
            }
        }
        if self.model.trim().is_empty() {
            return Err(PodRuleError::EmptyModel { rule: number });
        }
        let model = parse_template(number, &self.model, label.is_some(), annotation.is_some())?;
        let mut what = Vec::new();
        if let Some(l) = &label {
            what.push(format!("label '{l}'"));
        }
        if let Some(a) = &annotation {
            what.push(format!("annotation '{a}'"));
        }
        if let Some(ns) = &namespace {
            what.push(format!("namespace '{ns}'"));
        }
        Ok(CompiledPodRule {
            label,
            annotation,
            namespace,
            model,
            server: self
                .server
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "config".into()),
            describe: format!("config pod rule #{number} ({})", what.join(", ")),
        })
    }
}

/// Validates every rule, in order; the first invalid one is the error.
pub fn compile_pod_rules(rules: &[PodRule]) -> Result<Vec<CompiledPodRule>, PodRuleError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| r.compile(i + 1))
        .collect()
}

/// The model `pod` serves: the first config rule that matches, else the built-ins (see
/// the module documentation); `None` when nothing in its metadata names one.
pub fn model_from_pod(pod: &PodMeta, rules: &[CompiledPodRule]) -> Option<PodIdentity> {
    from_config(pod, rules)
        .or_else(|| kserve(pod))
        .or_else(|| recommended_labels(pod))
}

/// The first of the user's rules that matches the pod.
pub fn from_config(pod: &PodMeta, rules: &[CompiledPodRule]) -> Option<PodIdentity> {
    rules.iter().find_map(|r| apply(r, pod))
}

fn apply(r: &CompiledPodRule, pod: &PodMeta) -> Option<PodIdentity> {
    if let Some(ns) = &r.namespace {
        if &pod.namespace != ns {
            return None;
        }
    }
    let label = match &r.label {
        Some(key) => Some(pod.label(key).filter(|v| !v.is_empty())?),
        None => None,
    };
    let annotation = match &r.annotation {
        Some(key) => Some(pod.annotation(key).filter(|v| !v.is_empty())?),
        None => None,
    };
    let mut model = String::new();
    for part in &r.model {
        model.push_str(match part {
            Part::Text(t) => t.as_str(),
            Part::Value => label.or(annotation).unwrap_or_default(),
            Part::Label => label.unwrap_or_default(),
            Part::Annotation => annotation.unwrap_or_default(),
            Part::Namespace => &pod.namespace,
            Part::Pod => &pod.name,
            Part::Workload => &pod.workload.name,
        });
    }
    let model = model.trim();
    if model.is_empty() {
        return None;
    }
    let mut read = Vec::new();
    if let (Some(k), Some(v)) = (&r.label, label) {
        read.push(format!("{k}={v}"));
    }
    if let (Some(k), Some(v)) = (&r.annotation, annotation) {
        read.push(format!("{k}={v}"));
    }
    let rule = if read.is_empty() {
        r.describe.clone()
    } else {
        format!("{}: {}", r.describe, read.join(", "))
    };
    Some(PodIdentity {
        model: model.to_string(),
        server: r.server.clone(),
        rule,
    })
}

/// The KServe built-in: the pod's InferenceService, if it belongs to one.
pub fn kserve(pod: &PodMeta) -> Option<PodIdentity> {
    let (key, isvc) = [
        "serving.kserve.io/inferenceservice",
        "serving.kubeflow.org/inferenceservice",
    ]
    .iter()
    .find_map(|k| pod.label(k).filter(|v| !v.is_empty()).map(|v| (*k, v)))?;
    let component = pod
        .label("component")
        .map(|c| format!(" (component {c})"))
        .unwrap_or_default();
    Some(PodIdentity {
        model: isvc.to_string(),
        server: "kserve".into(),
        rule: format!("built-in kserve: label {key}={isvc}{component}"),
    })
}

/// The `app.kubernetes.io/instance` (model) and `name` (server) built-in.
pub fn recommended_labels(pod: &PodMeta) -> Option<PodIdentity> {
    let instance = pod
        .label("app.kubernetes.io/instance")
        .filter(|v| !v.is_empty())?;
    let name = pod
        .label("app.kubernetes.io/name")
        .filter(|v| !v.is_empty());
    if name == Some(instance) {
        return None;
    }
    let (server, rule) = match name {
        Some(n) => (
            n.to_string(),
            format!("built-in kubernetes labels: app.kubernetes.io/instance={instance} (model), app.kubernetes.io/name={n} (server)"),
        ),
        None => (
            "kubernetes".to_string(),
            format!("built-in kubernetes labels: app.kubernetes.io/instance={instance} (model; no app.kubernetes.io/name)"),
        ),
    };
    Some(PodIdentity {
        model: instance.to_string(),
        server,
        rule,
    })
}

/// Parses `${value}`, `${label}`, `${annotation}`, `${namespace}`, `${pod}`,
/// `${workload}` and `$$`; a `$` before anything else is literal.
fn parse_template(
    number: usize,
    t: &str,
    has_label: bool,
    has_annotation: bool,
) -> Result<Vec<Part>, PodRuleError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = t;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            text.push('$');
            rest = after;
            continue;
        }
        let Some(body) = rest.strip_prefix('{') else {
            text.push('$');
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(PodRuleError::Unterminated {
                rule: number,
                template: t.to_string(),
            });
        };
        let name = &body[..end];
        rest = &body[end + 1..];
        let unknown = |why: &'static str| PodRuleError::UnknownReference {
            rule: number,
            template: t.to_string(),
            reference: format!("${{{name}}}"),
            why,
        };
        let part = match name {
            "value" if has_label || has_annotation => Part::Value,
            "value" => return Err(unknown("which needs 'label' or 'annotation' in the rule")),
            "label" if has_label => Part::Label,
            "label" => return Err(unknown("which needs 'label' in the rule")),
            "annotation" if has_annotation => Part::Annotation,
            "annotation" => return Err(unknown("which needs 'annotation' in the rule")),
            "namespace" => Part::Namespace,
            "pod" => Part::Pod,
            "workload" => Part::Workload,
            _ => return Err(unknown("which is not one of ${value}, ${label}, ${annotation}, ${namespace}, ${pod}, ${workload}")),
        };
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(part);
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain of at most
/// 253 characters, the name at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn is_k8s_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    name_ok && prefix_ok
}

/// A DNS-1123 label: at most 63 lowercase alphanumerics and `-`, starting and ending
/// alphanumeric (namespace names, and each part of a key's prefix).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::kubelet::{PodIndex, Workload};
    use std::collections::BTreeMap;

    fn pod(ns: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodMeta {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        PodMeta {
            uid: "0f4c2a4e-8c1b-4c55-9c2f-1f2e3d4c5b6a".into(),
            name: "serve-6b9c7d5f8-q7wzn".into(),
            namespace: ns.into(),
            labels: map(labels),
            annotations: map(annotations),
            workload: Workload {
                kind: "Deployment".into(),
                name: "serve".into(),
            },
            containers: Vec::new(),
            phase: Some("Running".into()),
            qos_class: None,
            node_name: None,
            pod_ip: None,
            host_network: false,
        }
    }

    fn rule(
        label: Option<&str>,
        annotation: Option<&str>,
        ns: Option<&str>,
        model: &str,
    ) -> PodRule {
        PodRule {
            label: label.map(str::to_string),
            annotation: annotation.map(str::to_string),
            namespace: ns.map(str::to_string),
            model: model.into(),
            server: None,
        }
    }

    fn compiled(rules: &[PodRule]) -> Vec<CompiledPodRule> {
        match compile_pod_rules(rules) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn model(p: &PodMeta, rules: &[CompiledPodRule]) -> Option<(String, String)> {
        model_from_pod(p, rules).map(|i| (i.model, i.server))
    }

    fn pair(m: &str, s: &str) -> Option<(String, String)> {
        Some((m.into(), s.into()))
    }

    #[test]
    fn a_kserve_label_names_the_inferenceservice() {
        let p = pod(
            "models",
            &[
                ("serving.kserve.io/inferenceservice", "llama3"),
                ("component", "predictor"),
            ],
            &[],
        );
        let Some(id) = model_from_pod(&p, &[]) else {
            panic!("no match");
        };
        assert_eq!(
            (id.model.as_str(), id.server.as_str()),
            ("llama3", "kserve")
        );
        assert_eq!(
            id.rule,
            "built-in kserve: label serving.kserve.io/inferenceservice=llama3 (component predictor)"
        );
        let legacy = pod(
            "models",
            &[("serving.kubeflow.org/inferenceservice", "bert")],
            &[],
        );
        assert_eq!(model(&legacy, &[]), pair("bert", "kserve"));
    }

    #[test]
    fn the_instance_label_is_the_model_and_the_name_label_the_server() {
        let p = pod(
            "inference",
            &[
                ("app.kubernetes.io/name", "vllm"),
                ("app.kubernetes.io/instance", "llama-8b"),
            ],
            &[],
        );
        let Some(id) = model_from_pod(&p, &[]) else {
            panic!("no match");
        };
        assert_eq!(
            (id.model.as_str(), id.server.as_str()),
            ("llama-8b", "vllm")
        );
        assert!(
            id.rule
                .contains("app.kubernetes.io/instance=llama-8b (model)"),
            "{}",
            id.rule
        );
        let only_instance = pod("x", &[("app.kubernetes.io/instance", "llama-8b")], &[]);
        assert_eq!(model(&only_instance, &[]), pair("llama-8b", "kubernetes"));
    }

    #[test]
    fn recommended_labels_that_name_only_the_application_name_no_model() {
        let only_name = pod("x", &[("app.kubernetes.io/name", "vllm")], &[]);
        assert_eq!(model(&only_name, &[]), None);
        let same = pod(
            "x",
            &[
                ("app.kubernetes.io/name", "vllm"),
                ("app.kubernetes.io/instance", "vllm"),
            ],
            &[],
        );
        assert_eq!(model(&same, &[]), None);
        assert_eq!(model(&pod("x", &[("app", "vllm")], &[]), &[]), None);
    }

    #[test]
    fn kserve_comes_before_the_recommended_labels() {
        let p = pod(
            "m",
            &[
                ("serving.kserve.io/inferenceservice", "llama3"),
                ("app.kubernetes.io/instance", "release-7"),
                ("app.kubernetes.io/name", "chart"),
            ],
            &[],
        );
        assert_eq!(model(&p, &[]), pair("llama3", "kserve"));
    }

    #[test]
    fn config_rules_come_first_in_order() {
        let rules = compiled(&[
            rule(Some("acme.com/model"), None, None, "acme/${value}"),
            rule(None, None, Some("models"), "ns-${workload}"),
        ]);
        let p = pod(
            "models",
            &[
                ("acme.com/model", "llama-8b"),
                ("serving.kserve.io/inferenceservice", "llama3"),
            ],
            &[],
        );
        let Some(id) = model_from_pod(&p, &rules) else {
            panic!("no match");
        };
        assert_eq!(
            (id.model.as_str(), id.server.as_str()),
            ("acme/llama-8b", "config")
        );
        assert_eq!(
            id.rule,
            "config pod rule #1 (label 'acme.com/model'): acme.com/model=llama-8b"
        );
        let no_label = pod("models", &[], &[]);
        assert_eq!(model(&no_label, &rules), pair("ns-serve", "config"));
        // Neither matches: the built-ins still apply.
        let elsewhere = pod(
            "other",
            &[("serving.kserve.io/inferenceservice", "llama3")],
            &[],
        );
        assert_eq!(model(&elsewhere, &rules), pair("llama3", "kserve"));
    }

    #[test]
    fn every_matcher_of_a_rule_must_match() {
        let mut r = rule(
            Some("team"),
            Some("acme.com/model"),
            Some("ml"),
            "${annotation}@${label}",
        );
        r.server = Some("acme-serve".into());
        let rules = compiled(&[r]);
        let full = pod("ml", &[("team", "search")], &[("acme.com/model", "bert")]);
        let Some(id) = model_from_pod(&full, &rules) else {
            panic!("no match");
        };
        assert_eq!(
            (id.model.as_str(), id.server.as_str()),
            ("bert@search", "acme-serve")
        );
        assert_eq!(
            id.rule,
            "config pod rule #1 (label 'team', annotation 'acme.com/model', namespace 'ml'): team=search, acme.com/model=bert"
        );
        assert_eq!(
            model(
                &pod(
                    "other",
                    &[("team", "search")],
                    &[("acme.com/model", "bert")]
                ),
                &rules
            ),
            None
        );
        assert_eq!(
            model(&pod("ml", &[], &[("acme.com/model", "bert")]), &rules),
            None
        );
        assert_eq!(model(&pod("ml", &[("team", "search")], &[]), &rules), None);
        // An empty value is no value.
        assert_eq!(
            model(
                &pod("ml", &[("team", "")], &[("acme.com/model", "bert")]),
                &rules
            ),
            None
        );
    }

    #[test]
    fn value_is_the_label_when_both_are_given_else_the_annotation() {
        let both = compiled(&[rule(Some("l"), Some("a"), None, "${value}")]);
        assert_eq!(
            model(
                &pod("x", &[("l", "from-label")], &[("a", "from-annotation")]),
                &both
            ),
            pair("from-label", "config")
        );
        let ann = compiled(&[rule(None, Some("a"), None, "${value}")]);
        assert_eq!(
            model(&pod("x", &[], &[("a", "from-annotation")]), &ann),
            pair("from-annotation", "config")
        );
    }

    #[test]
    fn templates_read_every_reference_and_literal_dollars() {
        let rules = compiled(&[rule(
            Some("m"),
            None,
            None,
            "$$${namespace}/${pod}/${workload}/${label}/$x",
        )]);
        assert_eq!(
            model(&pod("ml", &[("m", "v")], &[]), &rules),
            pair("$ml/serve-6b9c7d5f8-q7wzn/serve/v/$x", "config")
        );
    }

    #[test]
    fn rule_errors_name_the_rule_and_the_fix() {
        let err = |r: PodRule| match compile_pod_rules(&[rule(Some("ok"), None, None, "fine"), r]) {
            Ok(_) => panic!("compiled"),
            Err(e) => e,
        };
        let e = err(rule(None, None, None, "m"));
        assert_eq!(e, PodRuleError::NoMatcher { rule: 2 });
        assert!(
            e.to_string()
                .starts_with("[[kubernetes.pod_rules]] #2: no matcher given"),
            "{e}"
        );
        assert_eq!(
            err(rule(Some("l"), None, None, "  ")),
            PodRuleError::EmptyModel { rule: 2 }
        );
        for bad in [
            "has space",
            "-lead",
            "a/b/c",
            "Upper.Prefix/x",
            "/x",
            &"n".repeat(64),
        ] {
            let e = err(rule(Some(bad), None, None, "m"));
            assert!(
                matches!(e, PodRuleError::BadKey { key: "label", .. }),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains(&format!("label '{bad}'")), "{e}");
        }
        let e = err(rule(None, Some("bad key"), None, "m"));
        assert!(
            matches!(
                e,
                PodRuleError::BadKey {
                    key: "annotation",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = err(rule(None, None, Some("ML_Prod"), "m"));
        assert!(e.to_string().contains("namespace 'ML_Prod'"), "{e}");
        let e = err(rule(None, None, Some("ml"), "${value}"));
        assert!(
            e.to_string()
                .contains("'${value}', which needs 'label' or 'annotation'"),
            "{e}"
        );
        let e = err(rule(None, Some("a"), None, "${label}"));
        assert!(e.to_string().contains("which needs 'label'"), "{e}");
        let e = err(rule(Some("l"), None, None, "${annotation}"));
        assert!(e.to_string().contains("which needs 'annotation'"), "{e}");
        let e = err(rule(Some("l"), None, None, "${1}"));
        assert!(e.to_string().contains("'${1}', which is not one of"), "{e}");
        let e = err(rule(Some("l"), None, None, "x-${value"));
        assert_eq!(
            e,
            PodRuleError::Unterminated {
                rule: 2,
                template: "x-${value".into()
            }
        );
    }

    #[test]
    fn valid_keys_and_namespaces_compile() {
        for key in [
            "app",
            "app.kubernetes.io/name",
            "serving.kserve.io/inferenceservice",
            "a_b.c-d",
            "x",
        ] {
            assert!(rule(Some(key), None, None, "m").compile(1).is_ok(), "{key}");
        }
        for ns in ["default", "kserve-test", "a1"] {
            assert!(rule(None, None, Some(ns), "m").compile(1).is_ok(), "{ns}");
        }
    }

    #[test]
    fn rules_read_from_toml_reject_unknown_fields() {
        #[derive(serde::Deserialize)]
        struct Section {
            pod_rules: Vec<PodRule>,
        }
        let good = "[[pod_rules]]\nlabel = \"acme.com/model\"\nmodel = \"acme/${value}\"\nserver = \"acme\"\n";
        match toml::from_str::<Section>(good) {
            Ok(s) => assert_eq!(
                s.pod_rules,
                vec![PodRule {
                    label: Some("acme.com/model".into()),
                    annotation: None,
                    namespace: None,
                    model: "acme/${value}".into(),
                    server: Some("acme".into()),
                }]
            ),
            Err(e) => panic!("{e}"),
        }
        let typo = "[[pod_rules]]\nlabels = \"x\"\nmodel = \"m\"\n";
        let Err(e) = toml::from_str::<Section>(typo) else {
            panic!("a misspelt key was accepted");
        };
        assert!(e.to_string().contains("unknown field `labels`"), "{e}");
        let missing = "[[pod_rules]]\nlabel = \"x\"\n";
        assert!(toml::from_str::<Section>(missing).is_err());
    }

    #[test]
    fn the_fixture_pods_name_their_models() {
        let Ok(idx) = PodIndex::from_pod_list(include_bytes!("testdata/kubelet-pods.json")) else {
            panic!("fixture does not parse");
        };
        let got: Vec<(&str, Option<(String, String)>)> = idx
            .pods()
            .iter()
            .map(|p| (p.name.as_str(), model(p, &[])))
            .collect();
        assert_eq!(
            got,
            vec![
                ("vllm-llama-8b-7d9f8b6c5d-x2k4p", pair("llama-8b", "vllm")),
                ("llama3-predictor-6b9c7d5f8-q7wzn", pair("llama3", "kserve")),
                ("sglang-qwen-0", None),
                ("nightly-eval-29411520-mz8kq", None),
                ("dcgm-exporter-gpu-node-a", None),
                ("vllm-llama-8b-7d9f8b6c5d-p9r2t", pair("llama-8b", "vllm")),
            ]
        );
    }
}
