//! `GET /api/v1/profile?seconds=N&cgroup=PATH|pid=PID&format=svg|folded|pprof|json`: an
//! on-demand CPU recording through the record machinery, one at a time, off the runtime.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hyper::{Response, StatusCode};

use super::{
    LatestProfile, Shared,
    cpu::{CpuRequest, WindowQuery, cgroup_ids_below},
    http::{Body, error, query_pairs, respond},
    rolling::SampleFilter,
};
use crate::{
    probes::MapSizes,
    profile::{self, Profile, SvgOptions, hot_paths, top_by_total},
    record::{RecordMode, RecordOptions, RecordTarget, record},
    symbolize::SymbolDetail,
};

/// An output format of the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Interactive flamegraph.
    Svg,
    /// Folded stacks.
    Folded,
    /// gzipped pprof protobuf.
    Pprof,
    /// flamewarden's profile JSON.
    Json,
}

/// Where a profile comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileSource {
    /// Recorded now, for `seconds`, at `profile_frequency_hz` (the default).
    Live,
    /// The last `seconds` of the always-on window, at once (`source=window`).
    Window,
}

/// A parsed profile request.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRequest {
    /// How long to record, or how far back to look.
    pub duration: Duration,
    /// Recorded now or taken from the window.
    pub source: ProfileSource,
    /// What to record.
    pub target: RecordTarget,
    /// The output.
    pub format: Format,
}

/// Parses the query; `max_seconds` bounds a live recording, `window_seconds` a look back.
pub fn parse_request(
    query: &str,
    max_seconds: u64,
    window_seconds: u64,
) -> Result<ProfileRequest, String> {
    let mut seconds = 10.0;
    let mut target = RecordTarget::All;
    let mut format = Format::Svg;
    let mut source = ProfileSource::Live;
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "source" => {
                source = match value.as_str() {
                    "live" => ProfileSource::Live,
                    "window" => ProfileSource::Window,
                    other => return Err(format!("source={other}: use live or window")),
                };
            }
            "seconds" => {
                seconds = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("seconds={value}: not a positive number"))?;
            }
            "cgroup" => {
                let path = PathBuf::from(&value);
                if !path.is_absolute() || !path.join("cgroup.procs").exists() {
                    return Err(format!("cgroup={value}: not a cgroup v2 directory"));
                }
                target = RecordTarget::Cgroups(vec![path]);
            }
            "pid" => {
                let pid: u32 = value
                    .parse()
                    .map_err(|_| format!("pid={value}: not a process id"))?;
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(format!("pid={value}: no such process"));
                }
                target = RecordTarget::Pids(vec![pid]);
            }
            "format" => {
                format = match value.as_str() {
                    "svg" => Format::Svg,
                    "folded" => Format::Folded,
                    "pprof" => Format::Pprof,
                    "json" => Format::Json,
                    other => {
                        return Err(format!("format={other}: use svg, folded, pprof or json"));
                    }
                };
            }
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    let (max, what) = match source {
        ProfileSource::Live => (max_seconds, "profile_max_seconds"),
        ProfileSource::Window => (window_seconds, "cpu_window_seconds"),
    };
    if seconds > max as f64 {
        return Err(format!("seconds={seconds}: at most {max} ({what})"));
    }
    Ok(ProfileRequest {
        duration: Duration::from_secs_f64(seconds),
        source,
        target,
        format,
    })
}

/// Serves one profile request.
pub async fn handle(shared: &Arc<Shared>, query: &str) -> Response<Body> {
    let config = shared.config();
    let request = match parse_request(query, config.profile_max_seconds, config.cpu_window_seconds)
    {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if request.source == ProfileSource::Window {
        return from_window(shared, &request).await;
    }
    let Ok(_one_at_a_time) = shared.profiling.try_lock() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "another profile is being recorded",
        );
    };
    let opts = RecordOptions {
        target: request.target.clone(),
        mode: RecordMode::Cpu,
        frequency_hz: config.profile_frequency_hz,
        min_block_ns: 0,
        duration: Some(request.duration),
        map_sizes: MapSizes::default(),
        symbols: match request.format {
            Format::Pprof | Format::Json => SymbolDetail::Lines,
            Format::Svg | Format::Folded => SymbolDetail::Names,
        },
    };
    let format = request.format;
    let recorded = tokio::task::spawn_blocking(move || {
        let recording = record(&opts, &AtomicBool::new(false)).map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })?;
        let profile = recording.profile;
        let svg = (format == Format::Svg)
            .then(|| render_svg(&profile))
            .flatten();
        let body = encode(&profile, format, svg.as_deref())?;
        Ok::<_, String>((profile, body))
    })
    .await;
    let (profile, body) = match recorded {
        Ok(Ok(out)) => out,
        Ok(Err(message)) => return error(StatusCode::INTERNAL_SERVER_ERROR, message),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let hot = hot_functions(&profile);
    *shared.latest.lock().unwrap() = Some(LatestProfile {
        target: profile.meta.target.clone(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        hot,
    });
    respond(StatusCode::OK, content_type(format), body)
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Svg => "image/svg+xml",
        Format::Folded => "text/plain; charset=utf-8",
        Format::Pprof => "application/octet-stream",
        Format::Json => "application/json",
    }
}

/// `source=window`: the last `seconds` of the always-on window, symbolized now.
async fn from_window(shared: &Arc<Shared>, request: &ProfileRequest) -> Response<Body> {
    let Some(cpu) = &shared.cpu else {
        return error(
            StatusCode::CONFLICT,
            "always-on profiling is off (cpu_sampling_hz = 0): use source=live",
        );
    };
    let (filter, target) = match &request.target {
        RecordTarget::Cgroups(paths) => (
            SampleFilter::Cgroups(paths.iter().flat_map(|p| cgroup_ids_below(p)).collect()),
            format!("cgroup {}", paths[0].display()),
        ),
        RecordTarget::Pids(pids) => (SampleFilter::Pid(pids[0]), format!("pid {}", pids[0])),
        _ => (SampleFilter::All, "all".to_owned()),
    };
    let query = WindowQuery {
        last: request.duration,
        filter,
        target: format!("{target} (rolling window)"),
        detail: match request.format {
            Format::Pprof | Format::Json => SymbolDetail::Lines,
            Format::Svg | Format::Folded => SymbolDetail::Names,
        },
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if cpu.send(CpuRequest::Profile(query, tx)).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the CPU thread is gone");
    }
    let Ok(profile) = rx.await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the CPU thread is gone");
    };
    let format = request.format;
    let encoded = tokio::task::spawn_blocking(move || {
        let svg = (format == Format::Svg)
            .then(|| render_svg(&profile))
            .flatten();
        encode(&profile, format, svg.as_deref())
    })
    .await;
    match encoded {
        Ok(Ok(body)) => respond(StatusCode::OK, content_type(format), body),
        Ok(Err(message)) => error(StatusCode::NOT_FOUND, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The ten hottest functions by self weight: (name, self %), hottest first.
pub fn hot_functions(profile: &Profile) -> Vec<(String, f64)> {
    let paths = hot_paths(profile, 5.0);
    let mut hot: Vec<(String, f64)> = top_by_total(&paths, 1000)
        .into_iter()
        .filter(|p| p.self_weight > 0)
        .map(|p| (p.name.clone(), p.self_pct))
        .collect();
    hot.sort_by(|a, b| b.1.total_cmp(&a.1));
    hot.truncate(10);
    hot
}

/// The interactive flamegraph of `profile`, `None` without samples.
pub fn render_svg(profile: &Profile) -> Option<String> {
    let mut out = Vec::new();
    profile::write_svg(profile, &SvgOptions::default(), &mut out).ok()?;
    String::from_utf8(out).ok()
}

fn encode(profile: &Profile, format: Format, svg: Option<&str>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match format {
        Format::Svg => {
            return svg
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| "nothing to draw: the profile has no samples".to_owned());
        }
        Format::Folded => profile::write_folded(profile, &mut out).map_err(|e| e.to_string())?,
        Format::Pprof => {
            profile::pprof::write_pprof_gz(profile, &mut out).map_err(|e| e.to_string())?;
        }
        Format::Json => profile::write_json(profile, &mut out).map_err(|e| e.to_string())?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_query_names_target_duration_and_format() {
        let r = parse_request("seconds=2.5&pid=1&format=pprof", 60, 300).unwrap();
        assert_eq!(r.duration, Duration::from_millis(2500));
        assert_eq!(r.target, RecordTarget::Pids(vec![1]));
        assert_eq!(r.format, Format::Pprof);
        let r = parse_request("", 60, 300).unwrap();
        assert_eq!((r.target, r.format), (RecordTarget::All, Format::Svg));
        assert_eq!(r.source, ProfileSource::Live);
        let r = parse_request("source=window&seconds=300", 60, 300).unwrap();
        assert_eq!(r.source, ProfileSource::Window);
    }

    #[test]
    fn bad_profile_queries_say_what_is_wrong() {
        assert!(
            parse_request("seconds=100", 60, 300)
                .unwrap_err()
                .contains("at most 60")
        );
        assert!(
            parse_request("format=png", 60, 300)
                .unwrap_err()
                .contains("png")
        );
        assert!(
            parse_request("cgroup=relative", 60, 300)
                .unwrap_err()
                .contains("cgroup")
        );
        assert!(
            parse_request("secs=1", 60, 300)
                .unwrap_err()
                .contains("secs")
        );
        assert!(
            parse_request("source=past", 60, 300)
                .unwrap_err()
                .contains("live or window")
        );
    }
}
