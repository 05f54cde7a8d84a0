//! Config identification rules (`[[identify.rules]]`): matchers, model templates,
//! precedence over the built-ins, and the errors a user sees.

use inferwatt_agent::identify::{Identifier, IdentifyError, ProcessFacts, RuleConfig};

const CONTAINER: &str = "3f4e1b2c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";

fn rules(toml_text: &str) -> Vec<RuleConfig> {
    #[derive(serde::Deserialize)]
    struct Doc {
        rules: Vec<RuleConfig>,
    }
    toml::from_str::<Doc>(toml_text).expect("valid rules").rules
}

fn process(cmdline: &str) -> ProcessFacts {
    ProcessFacts {
        pid: 31337,
        exe: "python3.12".into(),
        cmdline: cmdline.split_whitespace().map(str::to_string).collect(),
        ..Default::default()
    }
}

#[test]
fn cmdline_regex_with_named_capture() {
    let id = Identifier::new(&rules(
        r#"
        [[rules]]
        cmdline_regex = 'serve_model\.py .*--checkpoint[= ]\S*/(?P<name>[^/ ]+)'
        model = "acme/${name}"
        server = "acme"
        "#,
    ))
    .expect("compiles");
    let got = id.identify(&process(
        "python3 serve_model.py --port 9000 --checkpoint=/ckpt/summarizer-v7",
    ));
    assert_eq!(
        (got.model.as_str(), got.server.as_str()),
        ("acme/summarizer-v7", "acme")
    );
    assert!(
        got.rule.starts_with("config rule #1 (cmdline_regex"),
        "{}",
        got.rule
    );
    // no match → built-ins, then unknown
    assert_eq!(
        id.identify(&process("python3 other.py")).model,
        "unknown:python3.12"
    );
}

#[test]
fn first_capture_group_is_the_default_model() {
    let id = Identifier::new(&rules(
        r#"
        [[rules]]
        cmdline_regex = '--deployment (\S+)'
        "#,
    ))
    .expect("compiles");
    let got = id.identify(&process("/srv/bin/infer --deployment chat-large --gpus 0"));
    assert_eq!(
        (got.model.as_str(), got.server.as_str()),
        ("chat-large", "config")
    );
}

#[test]
fn env_rule_takes_the_value() {
    let id = Identifier::new(&rules(
        r#"
        [[rules]]
        cmdline_regex = 'never-matches-anything'
        model = "x"

        [[rules]]
        env = "INFERWATT_MODEL"
        "#,
    ))
    .expect("compiles");
    let mut p = process("python3 app.py");
    p.env = vec![
        ("PATH".into(), "/usr/bin".into()),
        ("INFERWATT_MODEL".into(), "team-a/llama-ft-3".into()),
    ];
    let got = id.identify(&p);
    assert_eq!(got.model, "team-a/llama-ft-3");
    assert_eq!(got.rule, "config rule #2 (env INFERWATT_MODEL)");
    // an empty value does not match
    p.env[1].1.clear();
    assert_eq!(id.identify(&p).server, "unknown");
}

#[test]
fn env_in_a_template() {
    let id = Identifier::new(&rules(
        r#"
        [[rules]]
        env = "MODEL_VERSION"
        cmdline_regex = 'app\.py'
        model = "ranker-${env}"
        "#,
    ))
    .expect("compiles");
    let mut p = process("python3 app.py");
    p.env = vec![("MODEL_VERSION".into(), "2024.11".into())];
    assert_eq!(id.identify(&p).model, "ranker-2024.11");
}

#[test]
fn cgroup_and_container_rules() {
    let id = Identifier::new(&rules(&format!(
        r#"
        [[rules]]
        container_id = "{}"
        model = "pinned-by-container"

        [[rules]]
        cgroup_regex = 'kubepods-.*-pod(?P<pod>[0-9a-f_]+)\.slice'
        model = "k8s-pod-${{pod}}"
        server = "k8s"
        "#,
        &CONTAINER[..12]
    )))
    .expect("compiles");
    let mut p = process("python3 -m some.server");
    p.cgroup = Some(format!("/system.slice/docker-{CONTAINER}.scope"));
    p.container_id = Some(CONTAINER.into());
    assert_eq!(id.identify(&p).model, "pinned-by-container");

    let mut q = process("python3 -m some.server");
    q.cgroup = Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8e2a_77b1.slice/cri-containerd-aa.scope".into());
    let got = id.identify(&q);
    assert_eq!(
        (got.model.as_str(), got.server.as_str()),
        ("k8s-pod-8e2a_77b1", "k8s")
    );
    // no cgroup known → the cgroup rule cannot match
    q.cgroup = None;
    assert_eq!(id.identify(&q).server, "unknown");
}

#[test]
fn config_rules_win_over_builtins_in_order() {
    let id = Identifier::new(&rules(
        r#"
        [[rules]]
        exe = "python3.12"
        cmdline_regex = 'vllm serve (\S+)'
        model = "prod/$1"
        server = "vllm"

        [[rules]]
        cmdline_regex = 'vllm'
        model = "never-reached"
        "#,
    ))
    .expect("compiles");
    let got = id.identify(&process("vllm serve meta-llama/Llama-3.1-8B-Instruct"));
    assert_eq!(got.model, "prod/meta-llama/Llama-3.1-8B-Instruct");
    assert!(got.rule.starts_with("config rule #1"), "{}", got.rule);
    // exe does not match → rule 2 catches it before the built-in
    let mut p = process("vllm serve meta-llama/Llama-3.1-8B-Instruct");
    p.exe = "python3.10".into();
    assert_eq!(id.identify(&p).model, "never-reached");
    // without config rules the built-in answers
    let plain = Identifier::new(&[]).expect("no rules").identify(&p);
    assert_eq!(plain.model, "meta-llama/Llama-3.1-8B-Instruct");
}

#[test]
fn bad_regex_names_rule_and_pattern() {
    let err = Identifier::new(&rules(
        r#"
        [[rules]]
        env = "X"

        [[rules]]
        cmdline_regex = 'serve (\S+'
        "#,
    ))
    .expect_err("bad regex");
    let msg = err.to_string();
    assert!(
        matches!(err, IdentifyError::BadRegex { rule: 2, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("#2") && msg.contains("cmdline_regex") && msg.contains("'serve (\\S+'"),
        "{msg}"
    );
    assert!(msg.contains("unclosed group"), "{msg}");
}

#[test]
fn rules_that_cannot_work_are_rejected() {
    let no_matcher = Identifier::new(&rules("[[rules]]\nmodel = \"x\"\n")).expect_err("no matcher");
    assert!(
        no_matcher.to_string().contains("no matcher"),
        "{no_matcher}"
    );

    let no_model =
        Identifier::new(&rules("[[rules]]\ncmdline_regex = 'serve'\n")).expect_err("no model");
    assert!(no_model.to_string().contains("no 'model'"), "{no_model}");

    let bad_ref = Identifier::new(&rules(
        "[[rules]]\ncmdline_regex = 'serve (\\S+)'\nmodel = '${name}'\n",
    ))
    .expect_err("unknown group");
    let msg = bad_ref.to_string();
    assert!(msg.contains("'${name}'") && msg.contains("#1"), "{msg}");

    let bad_id = Identifier::new(&rules("[[rules]]\ncontainer_id = 'abc'\nmodel = 'x'\n"))
        .expect_err("short id");
    assert!(bad_id.to_string().contains("'abc'"), "{bad_id}");
}

#[test]
fn unknown_keys_are_refused() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Doc {
        rules: Vec<RuleConfig>,
    }
    let err =
        toml::from_str::<Doc>("[[rules]]\ncmdline = 'x'\nmodel = 'y'\n").expect_err("unknown key");
    assert!(err.to_string().contains("unknown field `cmdline`"), "{err}");
}
