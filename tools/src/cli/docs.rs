//! Man pages and shell completions for graspd, grasp, quadsmaker and
//! grasp-ca, made from their clap definitions (clap_mangen, clap_complete),
//! and graspd.toml(5), made from the README's configuration table: each
//! has one source, so the pages cannot drift from what the tools accept.
//! `grasp-docs DIR` writes them all; packaging installs what it writes.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The README, whose "Configuration" table is graspd.toml(5)'s source.
const README: &str = include_str!("../../../README.md");

/// The tools that get man pages and completions, as clap commands (those
/// this build has: quadsmaker needs the `quads` feature, grasp-ca both).
pub fn commands() -> Vec<Command> {
    #[allow(unused_mut)]
    let mut all = vec![
        super::graspd::Args::command(),
        super::grasp::Args::command(),
    ];
    #[cfg(feature = "quads")]
    all.push(super::quadsmaker::Args::command());
    #[cfg(all(feature = "tls", feature = "quads"))]
    all.push(super::grasp_ca::Args::command());
    all
}

/// Writes, under `dir`: `man/man1/TOOL.1` and `man/man1/TOOL-SUB.1` for
/// every subcommand, `man/man5/graspd.toml.5`, and the completions
/// `completions/bash/TOOL`, `completions/zsh/_TOOL` and
/// `completions/fish/TOOL.fish`. Returns the files written.
pub fn write(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man1 = dir.join("man/man1");
    std::fs::create_dir_all(&man1)?;
    for cmd in commands() {
        man_pages(&cmd, &man1, &mut written)?;
        for (shell, sub, file) in [
            (Shell::Bash, "bash", cmd.get_name().to_string()),
            (Shell::Zsh, "zsh", format!("_{}", cmd.get_name())),
            (Shell::Fish, "fish", format!("{}.fish", cmd.get_name())),
        ] {
            let d = dir.join("completions").join(sub);
            std::fs::create_dir_all(&d)?;
            let mut c = cmd.clone();
            let name = c.get_name().to_string();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut c, name, &mut out);
            let path = d.join(file);
            std::fs::write(&path, out)?;
            written.push(path);
        }
    }
    let man5 = dir.join("man/man5");
    std::fs::create_dir_all(&man5)?;
    let path = man5.join("graspd.toml.5");
    std::fs::write(&path, config_page()?)?;
    written.push(path);
    Ok(written)
}

/// `cmd`'s page and one per (visible) subcommand, named TOOL-SUB.
fn man_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut cmd = cmd.clone();
    // Global options and the help subcommand reach the subcommands.
    cmd.build();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    let path = dir.join(format!("{}.1", cmd.get_name()));
    std::fs::write(&path, out)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        let page = sub.clone().name(name.clone()).display_name(name);
        man_pages(&page, dir, written)?;
    }
    Ok(())
}

/// The rows of the README's configuration table: (keys, default, meaning),
/// as written (Markdown).
pub fn config_rows() -> io::Result<Vec<[String; 3]>> {
    let table = README
        .split_once("| setting | default | meaning |")
        .map(|(_, t)| t)
        .ok_or_else(|| {
            io::Error::other("README.md has no `| setting | default | meaning |` table")
        })?;
    let rows: Vec<[String; 3]> = table
        .lines()
        .skip(2) // the header's rule, then the rows
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
            match cells.as_slice() {
                [k, d, m] => Some([k.trim().into(), d.trim().into(), m.trim().into()]),
                _ => None,
            }
        })
        .collect();
    if rows.is_empty() {
        return Err(io::Error::other("README.md's configuration table is empty"));
    }
    Ok(rows)
}

/// graspd.toml(5) in roff.
fn config_page() -> io::Result<String> {
    let mut p = String::from(
        ".TH GRASPD.TOML 5 \"\" \"graspd\" \"File Formats\"\n\
         .SH NAME\n\
         graspd.toml \\- configuration of graspd, the GRASP node daemon\n\
         .SH SYNOPSIS\n\
         .B /etc/grasp/graspd.toml\n\
         .SH DESCRIPTION\n\
         A TOML file read by \\fBgraspd\\fR(1) (\\fB\\-\\-config\\fR) and by \\fBgrasp\\fR(1) \
         when it runs a node of its own. Flags override the file. Unknown keys are refused, \
         naming the key; \\fBgraspd \\-\\-check\\-config\\fR explains what a file does. \
         Dotted keys are tables: \\fBquads.key_file\\fR is \\fBkey_file\\fR under \\fB[quads]\\fR; \
         \\fB[[api.allow]]\\fR and \\fB[[serve]]\\fR are arrays of tables.\n\
         .SH KEYS\n",
    );
    for [keys, default, meaning] in config_rows()? {
        p.push_str(".TP\n");
        p.push_str(&roff(&keys));
        if !default.is_empty() {
            p.push_str(&format!(" (default: {})", roff(&default)));
        }
        p.push('\n');
        p.push_str(&roff(&meaning));
        p.push('\n');
    }
    p.push_str(
        ".SH FILES\n\
         .TP\n\
         /etc/grasp/graspd.toml\n\
         the file the packaged systemd unit starts graspd with\n\
         .SH SEE ALSO\n\
         \\fBgraspd\\fR(1), \\fBgrasp\\fR(1), \\fBquadsmaker\\fR(1), \\fBgrasp\\-ca\\fR(1)\n",
    );
    Ok(p)
}

/// Markdown cell text as roff: `code` bold, roff's specials escaped.
fn roff(md: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    for c in md.chars() {
        match c {
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    // A line starting with . or ' would be a request.
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}
