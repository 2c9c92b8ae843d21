//! `accel run --check`: the configuration the library would build for the command, printed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use accel_engine::config::{Config, ConfigWarning, Profile, Setting, Source};
use accel_engine::rules::RuleSet;

use crate::args::{program_name, RunArgs};
use crate::preload::LibError;

/// The name `ACCEL_PROFILE` uses for a profile.
pub fn profile_name(p: Profile) -> &'static str {
    match p {
        Profile::Default => "default",
        Profile::Latency => "latency",
        Profile::UltraLatency => "ultra-latency",
        Profile::Throughput => "throughput",
    }
}

/// The variable source the library would see: this run's `-e`/`--profile` values over `env`.
pub fn var_source<'a>(
    run: &'a RunArgs,
    env: impl Fn(&str) -> Option<String> + 'a,
) -> impl Fn(&str) -> Option<String> + 'a {
    let overrides: HashMap<&str, &str> = run
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    move |k: &str| overrides.get(k).map(|v| v.to_string()).or_else(|| env(k))
}

/// Builds the report. Returns the text and whether anything is wrong (a warning, or no library).
pub fn report(
    run: &RunArgs,
    lib: &Result<PathBuf, LibError>,
    env: impl Fn(&str) -> Option<String>,
) -> (String, bool) {
    let (config, mut warnings) = Config::from_vars(var_source(run, env));
    let program = run
        .command
        .first()
        .map(|c| program_name(c))
        .unwrap_or_default();

    let mut out = String::new();
    match lib {
        Ok(p) => {
            let _ = writeln!(out, "library:  {}", p.display());
        }
        Err(e) => {
            let _ = writeln!(out, "library:  not found");
            for line in e.to_string().lines() {
                let _ = writeln!(out, "          {line}");
            }
        }
    }
    if program.is_empty() {
        let _ = writeln!(out, "program:  (no command given)");
    } else {
        let _ = writeln!(out, "program:  {program}");
    }
    let _ = writeln!(out, "profile:  {}", profile_name(config.profile));
    let _ = writeln!(
        out,
        "accel:    {}",
        if config.enable {
            "enabled"
        } else {
            "disabled (pass-through)"
        }
    );
    out.push('\n');

    let overridden: Vec<&str> = run.env.iter().map(|(k, _)| k.as_str()).collect();
    out.push_str(&settings_table(&config.describe(), &overridden));
    out.push('\n');

    match &config.config_file {
        None => out.push_str("rules:    none (ACCEL_CONFIG_FILE not set)\n"),
        Some(path) => {
            let (rules, rule_warnings) =
                RuleSet::load(path, &program, config.application_id.as_deref());
            warnings.extend(rule_warnings);
            let who = if program.is_empty() {
                "every program".to_string()
            } else {
                format!("program {program:?}")
            };
            let _ = writeln!(out, "rules:    {} (for {who})", path.display());
            if rules.rules.is_empty() {
                out.push_str("  (no rules apply)\n");
            }
            for r in &rules.rules {
                let _ = writeln!(out, "  {}: {}", r.line, r.text);
            }
        }
    }
    out.push('\n');
    out.push_str(&warnings_text(&warnings));
    (out, lib.is_err() || !warnings.is_empty())
}

fn source_text(source: &Source, overridden: &[&str]) -> String {
    match source {
        Source::Default => "default".to_string(),
        Source::Profile(p) => format!("profile {}", profile_name(*p)),
        Source::Env(name) if overridden.contains(&name.as_str()) => format!("-e {name}"),
        Source::Env(name) => format!("env {name}"),
    }
}

/// The settings as aligned columns: name, alias, value, source.
pub fn settings_table(settings: &[Setting], overridden: &[&str]) -> String {
    let rows: Vec<[String; 4]> = settings
        .iter()
        .map(|s| {
            [
                s.name.to_string(),
                s.alias.unwrap_or("-").to_string(),
                if s.value.is_empty() {
                    "(unset)".to_string()
                } else {
                    s.value.clone()
                },
                source_text(&s.source, overridden),
            ]
        })
        .collect();
    let header = ["SETTING", "ALIAS", "VALUE", "SOURCE"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn warnings_text(warnings: &[ConfigWarning]) -> String {
    if warnings.is_empty() {
        return "warnings: none\n".to_string();
    }
    let mut out = format!("warnings: {}\n", warnings.len());
    for w in warnings {
        let _ = writeln!(out, "  {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(
        name: &'static str,
        alias: Option<&'static str>,
        value: &str,
        source: Source,
    ) -> Setting {
        Setting {
            name,
            alias,
            value: value.to_string(),
            source,
            help: "",
        }
    }

    #[test]
    fn table_is_aligned_with_sources() {
        let s = vec![
            setting(
                "ACCEL_ENABLE",
                Some("VMA_OFFLOADED_SOCKETS"),
                "1",
                Source::Default,
            ),
            setting(
                "ACCEL_RX_POLL",
                Some("VMA_RX_POLL"),
                "-1",
                Source::Profile(Profile::Latency),
            ),
            setting(
                "ACCEL_RX_BUFS",
                Some("VMA_RX_BUFS"),
                "1024",
                Source::Env("VMA_RX_BUFS".into()),
            ),
            setting(
                "ACCEL_MTU",
                Some("VMA_MTU"),
                "9000",
                Source::Env("ACCEL_MTU".into()),
            ),
            setting("ACCEL_PRESERVE_ENV", None, "", Source::Default),
        ];
        let t = settings_table(&s, &["ACCEL_MTU"]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[0].starts_with("SETTING "));
        assert!(lines[1].contains("VMA_OFFLOADED_SOCKETS") && lines[1].ends_with("default"));
        assert!(lines[2].ends_with("profile latency"));
        assert!(lines[3].ends_with("env VMA_RX_BUFS"));
        assert!(lines[4].ends_with("-e ACCEL_MTU"));
        assert!(lines[5].contains(" - ") && lines[5].contains("(unset)"));
        // Columns line up: every row has its value at the same offset as the header's VALUE.
        let col = lines[0].find("VALUE").unwrap();
        assert_eq!(&lines[3][col..col + 4], "1024");
        assert_eq!(&lines[4][col..col + 4], "9000");
    }

    #[test]
    fn overrides_beat_the_environment() {
        let run = RunArgs {
            env: vec![
                ("A".into(), "1".into()),
                ("A".into(), "2".into()),
                ("ACCEL_PROFILE".into(), "latency".into()),
            ],
            ..Default::default()
        };
        let get = var_source(&run, |k| match k {
            "A" => Some("env".into()),
            "B" => Some("envb".into()),
            _ => None,
        });
        assert_eq!(get("A").as_deref(), Some("2"));
        assert_eq!(get("B").as_deref(), Some("envb"));
        assert_eq!(get("ACCEL_PROFILE").as_deref(), Some("latency"));
        assert_eq!(get("C"), None);
    }

    #[test]
    fn warnings_listed() {
        assert_eq!(warnings_text(&[]), "warnings: none\n");
        let w = ConfigWarning {
            variable: "VMA_RX_BUFS".into(),
            value: "lots".into(),
            problem: "not a number".into(),
            used: "200000".into(),
        };
        let t = warnings_text(&[w]);
        assert!(t.starts_with("warnings: 1\n"));
        assert!(t.contains("VMA_RX_BUFS=\"lots\": not a number; using 200000"));
    }
}
