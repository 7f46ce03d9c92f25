//! The figures: kept as rows (figure, tool, parameter, metric, unit, statistics over the runs),
//! written as CSV (the raw numbers), a Markdown table with tend's ratios to the others, and a
//! PNG plot of the scaling runs (gnuplot).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::measure::Stat;

#[derive(Clone, Debug)]
pub struct Row {
    pub figure: String,
    pub tool: String,
    pub param: String,
    pub metric: String,
    pub unit: String,
    pub stat: Stat,
    pub values: Vec<f64>,
}

#[derive(Default)]
pub struct Results {
    pub rows: Vec<Row>,
}

impl Results {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        figure: &str,
        tool: &str,
        param: &str,
        metric: &str,
        unit: &str,
        values: &[f64],
    ) {
        let row = Row {
            figure: figure.into(),
            tool: tool.into(),
            param: param.into(),
            metric: metric.into(),
            unit: unit.into(),
            stat: Stat::of(values),
            values: values.to_vec(),
        };
        eprintln!(
            "  {figure:<16} {tool:<24} {param:<8} {metric:<10} median {} (min {}, max {}, n={})",
            fmt(row.stat.median, unit),
            fmt(row.stat.min, unit),
            fmt(row.stat.max, unit),
            row.stat.n
        );
        self.rows.push(row);
    }

    pub fn get(&self, figure: &str, tool: &str, param: &str, metric: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.figure == figure && r.tool == tool && r.param == param && r.metric == metric
        })
    }

    /// Reads what [`Results::write_csv`] wrote (to plot again without measuring again).
    pub fn read_csv(path: &Path) -> Result<Results> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut res = Results::default();
        for (n, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            ensure!(
                f.len() == 10,
                "{}:{}: expected 10 fields",
                path.display(),
                n + 1
            );
            let values: Vec<f64> = f[9]
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}:{}", path.display(), n + 1))?;
            res.rows.push(Row {
                figure: f[0].into(),
                tool: f[1].into(),
                param: f[2].into(),
                metric: f[3].into(),
                unit: f[4].into(),
                stat: Stat::of(&values),
                values,
            });
        }
        Ok(res)
    }

    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut s = String::from("figure,tool,param,metric,unit,median,min,max,n,values\n");
        for r in &self.rows {
            let values: Vec<String> = r.values.iter().map(|v| format!("{v}")).collect();
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{}",
                r.figure,
                r.tool,
                r.param,
                r.metric,
                r.unit,
                r.stat.median,
                r.stat.min,
                r.stat.max,
                r.stat.n,
                values.join(" ")
            );
        }
        fs::write(path, s).with_context(|| format!("writing {}", path.display()))
    }

    /// One Markdown table: a row per (figure, param, metric), a column per tool, then tend's
    /// ratio to each other tool measured in the same run.
    pub fn markdown(&self, tools: &[&str]) -> String {
        let mut keys: Vec<(&str, &str, &str, &str)> = Vec::new();
        for r in &self.rows {
            let k = (
                r.figure.as_str(),
                r.param.as_str(),
                r.metric.as_str(),
                r.unit.as_str(),
            );
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let others: Vec<&str> = tools.iter().copied().filter(|t| *t != "tend").collect();
        let mut s = String::from("| figure | param | metric |");
        for t in tools {
            let _ = write!(s, " {t} |");
        }
        for t in &others {
            let _ = write!(s, " tend ÷ {t} |");
        }
        s.push_str("\n|---|---|---|");
        for _ in tools.iter().chain(others.iter()) {
            s.push_str("---:|");
        }
        s.push('\n');
        for (figure, param, metric, unit) in keys {
            let _ = write!(s, "| {figure} | {param} | {metric} |");
            for t in tools {
                match self.get(figure, t, param, metric) {
                    Some(r) => {
                        let _ = write!(
                            s,
                            " {} <sub>{}–{}</sub> |",
                            fmt(r.stat.median, unit),
                            fmt(r.stat.min, unit),
                            fmt(r.stat.max, unit)
                        );
                    }
                    None => s.push_str(" – |"),
                }
            }
            let tend = self.get(figure, "tend", param, metric);
            for t in &others {
                match (tend, self.get(figure, t, param, metric)) {
                    (Some(a), Some(b)) if b.stat.median > 0.0 => {
                        let _ = write!(s, " {} |", ratio(a.stat.median / b.stat.median));
                    }
                    _ => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s
    }

    /// scaling.png: no-op wall time against managed files, one line per tool, log-log.
    pub fn plot_scaling(&self, dir: &Path, tools: &[&str]) -> Result<()> {
        let mut script = String::from(
            "set terminal pngcairo size 900,560 font 'DejaVu Sans,11'\n\
             set output 'scaling.png'\n\
             set title 'No-op converge: wall time by managed files (median, min–max)'\n\
             set logscale xy\nset xlabel 'managed files'\nset ylabel 'wall time (ms)'\n\
             set key bottom right\nset grid\n",
        );
        let mut plots = Vec::new();
        for t in tools {
            let mut points: Vec<(f64, &Row)> = self
                .rows
                .iter()
                .filter(|r| r.figure == "noop-scaling" && r.tool == *t && r.metric == "wall")
                .filter_map(|r| r.param.parse::<f64>().ok().map(|p| (p, r)))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut data = String::new();
            for (files, r) in points {
                let _ = writeln!(
                    data,
                    "{files} {} {} {}",
                    r.stat.median * 1e3,
                    r.stat.min * 1e3,
                    r.stat.max * 1e3
                );
            }
            let file = format!("scaling-{t}.dat");
            fs::write(dir.join(&file), data)?;
            plots.push(format!(
                "'{file}' using 1:2:3:4 with yerrorlines title '{t}'"
            ));
        }
        ensure!(!plots.is_empty(), "no scaling rows to plot");
        let _ = writeln!(script, "plot {}", plots.join(", \\\n     "));
        fs::write(dir.join("scaling.gnuplot"), &script)?;
        let st = Command::new("gnuplot")
            .arg("scaling.gnuplot")
            .current_dir(dir)
            .output()
            .context("gnuplot (apt-get install gnuplot-nox)")?;
        ensure!(
            st.status.success(),
            "gnuplot: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        for t in tools {
            let _ = fs::remove_file(dir.join(format!("scaling-{t}.dat")));
        }
        fs::remove_file(dir.join("scaling.gnuplot"))?;
        Ok(())
    }
}

pub fn fmt(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "–".into();
    }
    match unit {
        "s" if v < 1.0 => format!("{:.1} ms", v * 1e3),
        "s" => format!("{v:.2} s"),
        "KiB" if v >= 1024.0 => format!("{:.1} MiB", v / 1024.0),
        "KiB" => format!("{v:.0} KiB"),
        "B" if v >= 1024.0 * 1024.0 => format!("{:.2} MiB", v / 1024.0 / 1024.0),
        "B" if v >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
        "B" => format!("{v:.0} B"),
        "insns" => format!("{:.1} M", v / 1e6),
        "" => format!("{v}"),
        _ => format!("{v} {unit}"),
    }
}

fn ratio(r: f64) -> String {
    if r == 0.0 {
        "0".into()
    } else if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("1/{:.0}", 1.0 / r)
    }
}
