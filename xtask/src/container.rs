//! The container step: the `Dockerfile` and `deploy/compose.yaml` are checked on every
//! run, and built where a Docker daemon answers.
//!
//! Without Docker (as on the CI machine), the files are read and checked for what the
//! deployment relies on: a multi-stage build, a user without privileges, a health check
//! on `/readyz`; and a compose file that is valid YAML, has PostgreSQL, Redis, the
//! sandbox and two gateway instances, mounts files that exist, and publishes each host
//! port once. With a daemon, `docker build` builds the image, and with the compose
//! plugin, `docker compose config` checks the file as Compose reads it. The step says
//! what it skipped.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use yaml_rust2::{Yaml, YamlLoader};

use crate::root;

/// Services the compose file must have.
const SERVICES: [&str; 5] = ["postgres", "redis", "sandbox", "gateway-1", "gateway-2"];

pub(crate) fn run() -> Result<()> {
    let root = root();
    check_dockerfile(&fs::read_to_string(root.join("Dockerfile")).context("reading Dockerfile")?)?;
    let deploy = root.join("deploy");
    let compose =
        fs::read_to_string(deploy.join("compose.yaml")).context("reading deploy/compose.yaml")?;
    check_compose(&compose, &deploy)?;
    eprintln!("xtask: Dockerfile and deploy/compose.yaml pass their checks");

    if !succeeds(Command::new("docker").arg("info")) {
        eprintln!("xtask: skipped: docker build (no Docker daemon answers here)");
        return Ok(());
    }
    let status = Command::new("docker")
        .args(["build", "-t", "sms-gateway:ci", "."])
        .current_dir(&root)
        .status()
        .context("running docker build")?;
    if !status.success() {
        bail!("docker build failed ({status})");
    }
    if succeeds(Command::new("docker").args(["compose", "version"])) {
        let status = Command::new("docker")
            .args(["compose", "-f", "deploy/compose.yaml", "config", "--quiet"])
            .current_dir(&root)
            .status()
            .context("running docker compose config")?;
        if !status.success() {
            bail!("docker compose config refused deploy/compose.yaml ({status})");
        }
    } else {
        eprintln!("xtask: skipped: docker compose config (no compose plugin here)");
    }
    Ok(())
}

/// Whether `command` runs and exits with success, its output discarded.
fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A multi-stage build whose image runs as a user without privileges and checks
/// `/readyz`.
fn check_dockerfile(text: &str) -> Result<()> {
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let starting = |word: &str| {
        instructions
            .iter()
            .filter(|l| l.to_ascii_uppercase().starts_with(word))
            .count()
    };
    if starting("FROM ") < 2 {
        bail!("Dockerfile: expected a multi-stage build (two FROM lines or more)");
    }
    let user = instructions
        .iter()
        .rev()
        .find(|l| l.to_ascii_uppercase().starts_with("USER "))
        .map(|l| l[5..].trim());
    match user {
        None => bail!("Dockerfile: expected a USER line: the image must not run as root"),
        Some("root" | "0") => bail!("Dockerfile: the image runs as root"),
        Some(_) => {}
    }
    if !text.contains("HEALTHCHECK") || !text.contains("/readyz") {
        bail!("Dockerfile: expected a HEALTHCHECK on /readyz");
    }
    Ok(())
}

/// The compose file's structure: see the module docs. `deploy` is the directory it is
/// read from, which relative paths are resolved against.
fn check_compose(text: &str, deploy: &Path) -> Result<()> {
    let docs = YamlLoader::load_from_str(text).context("deploy/compose.yaml is not YAML")?;
    let Some(doc) = docs.first() else {
        bail!("deploy/compose.yaml: empty");
    };
    let services = &doc["services"];
    if services.as_hash().is_none() {
        bail!("deploy/compose.yaml: expected a `services` mapping");
    }
    let mut ports = HashSet::new();
    for name in SERVICES {
        let service = &services[name];
        if service.is_badvalue() {
            bail!("deploy/compose.yaml: expected a service `{name}`");
        }
        if key(service, "image").is_badvalue() && key(service, "build").is_badvalue() {
            bail!("deploy/compose.yaml: services.{name}: expected an image or a build");
        }
        if let Some(context) = key(service, "build")["context"].as_str() {
            let dockerfile = key(service, "build")["dockerfile"]
                .as_str()
                .unwrap_or("Dockerfile");
            let path = deploy.join(context).join(dockerfile);
            if !path.is_file() {
                bail!("deploy/compose.yaml: services.{name}: no {dockerfile} in {context}");
            }
        }
        for volume in key(service, "volumes").as_vec().into_iter().flatten() {
            let Some(source) = volume.as_str().and_then(|v| v.split(':').next()) else {
                continue;
            };
            if source.starts_with('.') && !deploy.join(source).exists() {
                bail!("deploy/compose.yaml: services.{name}: {source} does not exist");
            }
        }
        for port in key(service, "ports").as_vec().into_iter().flatten() {
            let Some(port) = port.as_str() else {
                bail!("deploy/compose.yaml: services.{name}: write ports as quoted strings");
            };
            // The host side: everything before the container port.
            let host = port.rsplit_once(':').map_or(port, |(host, _)| host);
            if !ports.insert(host.to_owned()) {
                bail!("deploy/compose.yaml: services.{name}: host port {host} is published twice");
            }
        }
    }
    for gateway in ["gateway-1", "gateway-2"] {
        let environment = key(&services[gateway], "environment");
        for variable in ["SMS_DATABASE_URL", "SMS_REDIS_URL", "SMS_API_TOKENS"] {
            if environment[variable].as_str().is_none() {
                bail!(
                    "deploy/compose.yaml: services.{gateway}: expected {variable} in its environment"
                );
            }
        }
    }
    Ok(())
}

/// `service[name]`, or the same key of the mapping merged into it with `<<` (the YAML
/// reader keeps merge keys as they are written).
fn key<'a>(service: &'a Yaml, name: &str) -> &'a Yaml {
    let own = &service[name];
    if own.is_badvalue() {
        &service["<<"][name]
    } else {
        own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository_compose() -> String {
        fs::read_to_string(root().join("deploy/compose.yaml")).unwrap()
    }

    #[test]
    fn the_repositorys_files_pass() {
        check_dockerfile(&fs::read_to_string(root().join("Dockerfile")).unwrap()).unwrap();
        check_compose(&repository_compose(), &root().join("deploy")).unwrap();
    }

    #[test]
    fn a_missing_gateway_a_missing_mount_and_a_port_twice_are_refused() {
        let deploy = root().join("deploy");
        let text = repository_compose();
        let e = check_compose(&text.replace("gateway-2:", "gateway-3:"), &deploy).unwrap_err();
        assert!(e.to_string().contains("gateway-2"), "{e}");
        let e =
            check_compose(&text.replace("./gateway.toml", "./missing.toml"), &deploy).unwrap_err();
        assert!(
            e.to_string().contains("./missing.toml does not exist"),
            "{e}"
        );
        let e = check_compose(&text.replace("8082:8080", "8081:8080"), &deploy).unwrap_err();
        assert!(e.to_string().contains("published twice"), "{e}");
        let e = check_compose("services: [", &deploy).unwrap_err();
        assert!(e.to_string().contains("not YAML"), "{e}");
    }

    #[test]
    fn an_image_running_as_root_or_without_a_health_check_is_refused() {
        let text = fs::read_to_string(root().join("Dockerfile")).unwrap();
        let e = check_dockerfile(&text.replace("USER sms", "USER root")).unwrap_err();
        assert!(e.to_string().contains("root"), "{e}");
        let e = check_dockerfile(&text.replace("HEALTHCHECK", "# no check")).unwrap_err();
        assert!(e.to_string().contains("HEALTHCHECK"), "{e}");
    }
}
