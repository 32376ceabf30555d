//! A Redis to reach (the cache's shared tier, a global rate limit's counts): its URL
//! in one of three deployments, and the password and CA files beside it.
//!
//! - one server: `redis://[user:password@]host:port[/db]`, `rediss://` (TLS), `redis+unix://`;
//! - Cluster: `redis-cluster://[user:password@]host:port,host:port` (seed nodes; `rediss-cluster://`);
//! - Sentinel: `redis-sentinel://[user:password@]host:port,host:port/SERVICE[/db]`
//!   (the sentinels, then the monitored primary's name; `rediss-sentinel://`). The
//!   credentials, TLS and db are the primary's; the sentinels are asked without them.

use std::path::Path;

use toml::Spanned;

use crate::model::{RedisLink, RedisTopology};
use crate::validate::Checker;

/// The URL's deployment; an error says what to write instead.
pub fn parse_redis_url(text: &str) -> Result<RedisTopology, String> {
    let example = "write e.g. \"redis://127.0.0.1:6379\", \"redis-cluster://10.0.0.1:7000,10.0.0.2:7000\" \
                   or \"redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster\"";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("\"{text}\" is not a Redis URL; {example}"));
    };
    match scheme {
        "redis" | "rediss" | "redis+unix" | "unix" => Ok(RedisTopology::Server(text.to_string())),
        "redis-cluster" | "rediss-cluster" => {
            let base = scheme.trim_end_matches("-cluster");
            let (credentials, hosts) = split_credentials(rest);
            if hosts.contains('/') {
                return Err(format!("\"{text}\": a cluster URL names no database or path; {example}"));
            }
            let nodes = host_list(hosts, text, example)?;
            Ok(RedisTopology::Cluster(nodes.iter().map(|host| format!("{base}://{credentials}{host}")).collect()))
        }
        "redis-sentinel" | "rediss-sentinel" => {
            let base = scheme.trim_end_matches("-sentinel");
            let (credentials, after) = split_credentials(rest);
            let (hosts, path) = after.split_once('/').unwrap_or((after, ""));
            let sentinels = host_list(hosts, text, example)?;
            let (service, db) = path.split_once('/').unwrap_or((path, "0"));
            if service.is_empty() {
                return Err(format!("\"{text}\" names no service: add /NAME, the primary's name in the sentinels' config (e.g. /mymaster)"));
            }
            if db.parse::<u16>().is_err() {
                return Err(format!("\"{text}\": \"{db}\" is not a database number"));
            }
            Ok(RedisTopology::Sentinel {
                sentinels: sentinels.iter().map(|host| format!("{base}://{host}")).collect(),
                service: service.to_string(),
                primary: format!("{base}://{credentials}primary/{db}"),
            })
        }
        _ => Err(format!("\"{scheme}://\" is not a Redis URL scheme; {example}")),
    }
}

/// `user:password@` (kept with its `@`) and the rest.
fn split_credentials(rest: &str) -> (&str, &str) {
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => rest.split_at(at + 1),
        None => ("", rest),
    }
}

fn host_list<'a>(hosts: &'a str, text: &str, example: &str) -> Result<Vec<&'a str>, String> {
    let list: Vec<&str> = hosts.split(',').map(str::trim).collect();
    for host in &list {
        let valid = host.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(format!("\"{text}\": \"{host}\" is not host:port; {example}"));
        }
    }
    Ok(list)
}

/// Checks a Redis link: `url` (at `url_key`), and the files named by `password_file`
/// and `ca_file` (at `files_key`.password_file / .ca_file), relative to `base_dir`.
pub(crate) fn check_redis_link(
    checker: &mut Checker,
    url: &Spanned<String>,
    url_key: &str,
    files: (&Option<Spanned<String>>, &Option<Spanned<String>>),
    files_key: (&str, &str),
    base_dir: &Path,
) -> Option<RedisLink> {
    let text = url.get_ref().trim();
    let topology = match parse_redis_url(text) {
        Ok(topology) => Some(topology),
        Err(why) => {
            checker.problem(url.span(), url_key, why);
            None
        }
    };
    let password_file = files.0.as_ref().and_then(|file| {
        let path = base_dir.join(file.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Some(path),
            Ok(_) => {
                checker.problem(file.span(), files_key.0, format!("{} is empty; write the password on its first line", path.display()));
                None
            }
            Err(e) => {
                let fix = "give a readable file with the password on its first line (relative paths are from the config file's folder)";
                checker.problem(file.span(), files_key.0, format!("{} cannot be read ({e}); {fix}", path.display()));
                None
            }
        }
    });
    let ca_file = files.1.as_ref().and_then(|file| {
        let path = base_dir.join(file.get_ref());
        if !text.starts_with("rediss") {
            checker.problem(file.span(), files_key.1, "is only for TLS: use a rediss:// URL, or remove it");
            return None;
        }
        match crate::validate_listeners::pem_file_problem(&path, false) {
            Some(problem) => {
                checker.problem(file.span(), files_key.1, problem);
                None
            }
            None => Some(path),
        }
    });
    let files_ok = files.0.is_none() == password_file.is_none() && files.1.is_none() == ca_file.is_none();
    Some(RedisLink { url: text.to_string(), topology: topology?, password_file, ca_file }).filter(|_| files_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_deployment_is_read_from_its_url() {
        assert_eq!(parse_redis_url("redis://h:6379/2"), Ok(RedisTopology::Server("redis://h:6379/2".into())));
        assert_eq!(
            parse_redis_url("rediss-cluster://app:pw@a:7000, b:7001"),
            Ok(RedisTopology::Cluster(vec!["rediss://app:pw@a:7000".into(), "rediss://app:pw@b:7001".into()]))
        );
        assert_eq!(
            parse_redis_url("redis-sentinel://:pw@a:26379,b:26380/mymaster/3"),
            Ok(RedisTopology::Sentinel {
                sentinels: vec!["redis://a:26379".into(), "redis://b:26380".into()],
                service: "mymaster".into(),
                primary: "redis://:pw@primary/3".into(),
            })
        );
        for bad in ["http://h:1", "redis-cluster://a", "redis-cluster://a:1/0", "redis-sentinel://a:1", "nothing"] {
            assert!(parse_redis_url(bad).is_err(), "{bad}");
        }
    }
}
