//! The man pages and completions (`grasp_tools::cli::docs`): one page per
//! tool and subcommand naming every option it takes, completions that
//! bash parses, and graspd.toml(5) naming every key the configuration
//! parser accepts, so none of them drifts from the tools.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command as Process;

use grasp_tools::cli::docs;
use grasp_tools::config::{DaemonOverrides, NodeArgs, NodeConfig};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every page of `cmd` (named `name`) and its subcommands exists and names
/// each of its visible long options (roff writes `-` as `\-`).
fn check_pages(cmd: &clap::Command, name: &str, man1: &Path) {
    let page = read(&man1.join(format!("{name}.1")));
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            let roffed = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(page.contains(&roffed), "{name}.1 does not mention --{long}");
        }
    }
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let sub_name = format!("{name}-{}", sub.get_name());
        let listed = sub.get_name().replace('-', "\\-");
        assert!(
            page.contains(&listed),
            "{name}.1 does not list {}",
            sub.get_name()
        );
        check_pages(sub, &sub_name, man1);
    }
}

#[test]
fn every_tool_and_subcommand_has_a_page_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let written = docs::write(dir.path()).unwrap();
    let man1 = dir.path().join("man/man1");
    let tools: Vec<clap::Command> = docs::commands();
    assert!(tools.len() >= 2);
    for mut cmd in tools {
        cmd.build();
        let name = cmd.get_name().to_string();
        check_pages(&cmd, &name, &man1);
        for (shell, file) in [
            ("bash", name.clone()),
            ("zsh", format!("_{name}")),
            ("fish", format!("{name}.fish")),
        ] {
            let p = dir.path().join("completions").join(shell).join(&file);
            let text = read(&p);
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                assert!(
                    text.contains(sub.get_name()),
                    "{shell} completion of {name} lacks {}",
                    sub.get_name()
                );
            }
        }
        // Each shell parses its file (bash is always there; zsh and fish
        // where installed, as CI does).
        for (shell, file, check) in [
            ("bash", name.clone(), "-n"),
            ("zsh", format!("_{name}"), "-n"),
            ("fish", format!("{name}.fish"), "--no-execute"),
        ] {
            let p = dir.path().join("completions").join(shell).join(file);
            match Process::new(shell).arg(check).arg(&p).output() {
                Ok(out) => assert!(
                    out.status.success(),
                    "{shell} cannot parse {}: {}",
                    p.display(),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(_) if shell != "bash" => {
                    eprintln!(
                        "docs: WARNING: {shell} is not installed; its completions were NOT parsed"
                    )
                }
                Err(e) => panic!("bash: {e}"),
            }
        }
    }
    // Pages render without a warning where groff is installed.
    let pages: Vec<_> = written
        .iter()
        .filter(|p| p.to_string_lossy().contains("/man/"))
        .collect();
    match Process::new("groff")
        .args(["-man", "-ww", "-z", "-t"])
        .args(&pages)
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff warns: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            eprintln!("docs: WARNING: groff is not installed; the pages' rendering was NOT checked")
        }
    }
}

/// The keys the configuration parser accepts in `table` (empty: the top
/// level), read from its refusal of an unknown key.
fn accepted(table: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("probe.toml");
    std::fs::write(&p, format!("{table}\nno_such_key_here = 1\n")).unwrap();
    let args = NodeArgs {
        config: Some(p),
        ..Default::default()
    };
    let err = NodeConfig::resolve(&args, &DaemonOverrides::default())
        .expect_err("an unknown key is refused")
        .to_string();
    let expected = err
        .split_once("expected")
        .map(|(_, e)| e)
        .unwrap_or_default();
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!keys.is_empty(), "no key list in: {err}");
    keys
}

#[test]
fn the_configuration_page_names_every_key_the_parser_takes() {
    let rows = docs::config_rows().unwrap();
    // Each row's first cell: its keys, backticked (`tls.cert`, or
    // `[[serve]]` `name`, ...).
    let cells: Vec<BTreeSet<String>> = rows
        .iter()
        .map(|[k, _, _]| {
            k.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        })
        .collect();
    let documented = |table: &str, key: &str| {
        cells.iter().any(|c| {
            if table.is_empty() {
                c.contains(key)
            } else {
                c.contains(&format!("{table}.{key}"))
                    || (c.iter().any(|k| {
                        k.contains(&format!("[[{table}]]")) || k.starts_with(&format!("{table}."))
                    }) && c.contains(key))
            }
        })
    };
    let tables = [
        "quads",
        "tls",
        "log",
        "control",
        "api",
        "api.allow",
        "metrics",
        "serve",
    ];
    for key in accepted("") {
        // A table's keys are checked below, table by table.
        if tables.contains(&key.as_str()) {
            continue;
        }
        assert!(documented("", &key), "graspd.toml(5) lacks `{key}`");
    }
    for (table, header) in [
        ("quads", "[quads]"),
        ("tls", "[tls]"),
        ("log", "[log]"),
        ("control", "[control]"),
        ("api", "[api]"),
        ("api.allow", "[[api.allow]]"),
        ("metrics", "[metrics]"),
        ("serve", "[[serve]]"),
    ] {
        for key in accepted(header) {
            if table == "api" && key == "allow" {
                continue; // the [[api.allow]] table, checked on its own
            }
            assert!(
                documented(table, &key),
                "graspd.toml(5) lacks `{table}.{key}`"
            );
        }
    }
}
