//! The results: a table on stdout, JSON for machines, an SVG chart for
//! people (throughput against writers, and latency percentiles).

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::Serialize;

/// One measured cell. The JSON fields are the contract of `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `hotblock`, `redis` or `sqlite`.
    pub system: String,
    /// `none`, `async` or `sync`.
    pub mode: String,
    /// `tcp`, `quic`, `embedded` (in process) or `redis-benchmark`.
    pub transport: String,
    /// What was run: `set` (the write workload), `get`, `insert`, `find`.
    pub workload: String,
    pub writers: usize,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub lag_ms_max: Option<u64>,
    pub errors: u64,
}

impl Row {
    pub fn label(&self) -> String {
        match self.system.as_str() {
            "redis" => match self.mode.as_str() {
                "none" => "redis".into(),
                "async" => "redis + replica".into(),
                _ => "redis + WAIT 1 0".into(),
            },
            _ => format!("{} {}", self.system, self.mode),
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    rows: &'a [Row],
}

pub fn json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(&Report { rows }).expect("rows serialize")
}

pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<9} {:<6} {:<15} {:<8} {:>7} {:>12} {:>9} {:>9} {:>9} {:>8} {:>6}\n",
        "system",
        "mode",
        "transport",
        "workload",
        "writers",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "lag ms",
        "errors"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<9} {:<6} {:<15} {:<8} {:>7} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>6}\n",
            r.system,
            r.mode,
            r.transport,
            r.workload,
            r.writers,
            r.ops_per_sec,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.lag_ms_max.map_or("-".to_string(), |l| l.to_string()),
            r.errors
        ));
    }
    out
}

/// Two panels: ops/s against writers, and p50/p99 latency against writers,
/// one line per system and mode (the networked write workload only).
pub fn svg(rows: &[Row], path: &std::path::Path, title: &str) -> Result<(), String> {
    let series = series(rows);
    if series.is_empty() {
        return Err("no networked rows to chart".into());
    }
    let max_writers = rows.iter().map(|r| r.writers).max().unwrap_or(1).max(2) as f64;
    let max_of = |value: fn(&Row) -> f64| {
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|r| value(r)))
            .fold(1.0, f64::max)
    };
    let (max_ops, max_us) = (max_of(|r| r.ops_per_sec), max_of(|r| r.p99_us));
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);
    let x_range = (1.0f64..max_writers * 1.2).log_scale();
    let mut ops = ChartBuilder::on(&left)
        .caption("throughput (ops/s) by writers", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone(), 0.0f64..max_ops * 1.1)
        .map_err(|e| e.to_string())?;
    ops.configure_mesh()
        .x_desc("writers")
        .y_desc("ops/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())?;
    let mut lat = ChartBuilder::on(&right)
        .caption("latency (µs): p50 solid, p99 dashed", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, (1.0f64..max_us * 1.5).log_scale())
        .map_err(|e| e.to_string())?;
    lat.configure_mesh()
        .x_desc("writers")
        .y_desc("µs")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (label, points)) in series.iter().enumerate() {
        let style = ShapeStyle::from(&Palette99::pick(i).to_rgba()).stroke_width(2);
        draw_throughput(&mut ops, label, points, style)?;
        draw_latency(&mut lat, points, style)?;
    }
    ops.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// The rows of the networked write workload, grouped by label (in order of
/// first appearance), each sorted by writers.
fn series(rows: &[Row]) -> Vec<(String, Vec<&Row>)> {
    let charted = |r: &&Row| r.workload == "set" && r.transport != "redis-benchmark";
    let mut labels: Vec<String> = Vec::new();
    for r in rows.iter().filter(charted) {
        if !labels.contains(&r.label()) {
            labels.push(r.label());
        }
    }
    labels
        .into_iter()
        .map(|l| {
            let mut points: Vec<&Row> = rows
                .iter()
                .filter(|r| charted(r) && r.label() == l)
                .collect();
            points.sort_by_key(|r| r.writers);
            (l, points)
        })
        .collect()
}

/// The left panel: writers against ops/s.
type ThroughputChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, RangedCoordf64>>;
/// The right panel: writers against µs, both log-scaled.
type LatencyChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// One series' throughput line, its points, and its legend entry.
fn draw_throughput(
    ops: &mut ThroughputChart<'_, '_>,
    label: &str,
    points: &[&Row],
    style: ShapeStyle,
) -> Result<(), String> {
    ops.draw_series(LineSeries::new(
        points.iter().map(|r| (r.writers as f64, r.ops_per_sec)),
        style,
    ))
    .map_err(|e| e.to_string())?
    .label(label)
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    ops.draw_series(
        points
            .iter()
            .map(|r| Circle::new((r.writers as f64, r.ops_per_sec), 3, style.filled())),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// One series' latency: p50 solid, p99 dashed.
fn draw_latency(
    lat: &mut LatencyChart<'_, '_>,
    points: &[&Row],
    style: ShapeStyle,
) -> Result<(), String> {
    lat.draw_series(LineSeries::new(
        points.iter().map(|r| (r.writers as f64, r.p50_us.max(1.0))),
        style,
    ))
    .map_err(|e| e.to_string())?;
    lat.draw_series(DashedLineSeries::new(
        points.iter().map(|r| (r.writers as f64, r.p99_us.max(1.0))),
        6,
        4,
        style,
    ))
    .map_err(|e| e.to_string())?;
    Ok(())
}
