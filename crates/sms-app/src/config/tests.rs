//! Reading, validating and printing the configuration, case by case.
use super::*;

#[test]
fn defaults_match_the_documented_values() {
    let c = Config::default();
    assert_eq!(c.failover.consecutive_failures, 2);
    assert_eq!(c.failover.slow_threshold, std::time::Duration::from_secs(1));
    assert_eq!(c.limit.global_per_second, 3000);
    assert_eq!(c.listen, "127.0.0.1:8080");
    assert!(c.database_url.is_none() && c.redis_url.is_none());
    assert_eq!(
        c.vendors.keys().collect::<Vec<_>>(),
        ["aliyun", "cloopen", "tencent"]
    );
    c.validate().unwrap();
}

#[test]
fn unknown_and_bad_keys_are_named() {
    let e = Config::from_toml("[failover]\nconsecutive_failure = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("consecutive_failure"), "{e}");
    let e = Config::from_toml("[failover]\nconsecutive_failures = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("consecutive_failures"), "{e}");
    let c = Config::from_toml("[queue]\nmax_attempts = 0\n").unwrap();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .starts_with("queue.max_attempts")
    );
    let e = Config::from_toml("[vendors.x]\nkind = \"nope\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant `nope`"), "{e}");
    assert!(e.contains("simulated") && e.contains("cloopen"), "{e}");
}

#[test]
fn each_vendor_kind_parses_with_its_settings() {
    let c = Config::from_toml(
        r#"
        [vendors.quiet]
        [vendors.sim]
        kind = "simulated"
        order = 3
        simulation = { latency_ms = 5, error_rate = 0.1 }
        fees = [{ up_to = 10, price = "0.05" }, { price = "0.04" }]
        [vendors.ali]
        kind = "aliyun"
        settings = { access_key_id = "id", access_key_secret = "s", sign_name = "Test" }
        [vendors.tc]
        kind = "tencent"
        order = 1
        settings = { secret_id = "AKID", sdk_app_id = "1400", timeout_ms = 500 }
        [vendors.cl]
        kind = "cloopen"
        settings = { account_sid = "sid", app_id = "app" }
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert!(
        matches!(&c.vendors["quiet"], VendorConfig::Simulated(v) if v.simulation == quiet_vendor())
    );
    match &c.vendors["sim"] {
        VendorConfig::Simulated(v) => {
            assert_eq!(v.order, 3);
            assert_eq!(v.simulation.latency_ms, 5);
            assert_eq!(v.simulation.error_rate, 0.1);
            assert_eq!(v.fees.as_ref().map(|f| f.tiers().len()), Some(2));
        }
        other => panic!("expected a simulated vendor, got {other:?}"),
    }
    assert!(matches!(&c.vendors["ali"], VendorConfig::Aliyun(v) if v.settings.sign_name == "Test"));
    assert!(
        matches!(&c.vendors["tc"], VendorConfig::Tencent(v) if v.order == 1 && v.settings.timeout_ms == 500)
    );
    assert!(
        matches!(&c.vendors["cl"], VendorConfig::Cloopen(v) if v.settings.app_id == "app" && v.fees.is_none())
    );
}

#[test]
fn a_typo_in_a_vendor_is_an_error_naming_the_key() {
    for (text, key) in [
        (
            "kind = \"aliyun\"\nsettings = { acess_key_id = \"x\" }",
            "acess_key_id",
        ),
        (
            "kind = \"tencent\"\nsettings = { sdk_appid = \"1\" }",
            "sdk_appid",
        ),
        (
            "kind = \"cloopen\"\nsetings = { app_id = \"a\" }",
            "setings",
        ),
        ("simulation = { eror_rate = 0.1 }", "eror_rate"),
        ("oder = 1", "oder"),
        (
            "kind = \"aliyun\"\nsimulation = { latency_ms = 1 }",
            "simulation",
        ),
        (
            "fees = [{ upto = 10, price = \"1\" }, { price = \"1\" }]",
            "upto",
        ),
    ] {
        let e = Config::from_toml(&format!("[vendors.x]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("unknown field `{key}`")), "{text}: {e}");
    }
    let e = Config::from_toml("[vendors.x]\nfees = [{ up_to = 10, price = \"1\" }]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("fee tier 0"), "{e}");
}

#[test]
fn the_gateways_retry_keys_are_read_from_the_queue_section() {
    let c = Config::from_toml(
        "[failover]\ncooldown_s = 5\n[queue]\nmax_attempts = 3\nlease_s = 60\nretention_h = 1\n",
    )
    .unwrap();
    assert_eq!(c.failover.cooldown, std::time::Duration::from_secs(5));
    assert_eq!(c.failover.max_attempts, 3);
    assert_eq!(c.failover.lease, std::time::Duration::from_secs(60));
    assert_eq!(c.queue.retention_h, 1);
    let e = Config::from_toml("[failover]\nmax_attempts = 3\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "line 2: failover.max_attempts: this key belongs in [queue]"
    );
    let e = Config::from_toml("[queue]\n\ncooldown_s = 3\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("line 3: queue.cooldown_s: unknown key"),
        "{e}"
    );
    let e = Config::from_toml("[postgres]\nurl = \"postgres://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("postgres.url: give the URL as database_url"),
        "{e}"
    );
}

#[test]
fn every_key_kept_in_the_queue_section_is_a_gateway_key() {
    let keys = toml::Table::try_from(FailoverConfig::default()).unwrap();
    for key in layout::QUEUE_KEYS {
        assert!(keys.contains_key(key), "{key}");
    }
}

#[test]
fn the_printed_configuration_reads_back_the_same() {
    let mut c = Config::from_toml(
        "[queue]\nmax_attempts = 4\n[limit]\nrecipient_windows = [{ limit = 2, window_s = 30 }]\n[vendors.x]\nkind = \"cloopen\"\n",
    )
    .unwrap();
    c.database_url = None;
    let shown = c.to_redacted_toml().unwrap();
    assert!(shown.contains("[queue]\n"), "{shown}");
    let back = Config::from_toml(&shown).unwrap();
    assert_eq!(back.failover, c.failover);
    assert_eq!(back.limit, c.limit);
    assert_eq!(back.postgres, c.postgres);
    assert_eq!(back.queue.retention_h, c.queue.retention_h);
    assert_eq!(
        toml::Table::try_from(&back.vendors).unwrap(),
        toml::Table::try_from(&c.vendors).unwrap()
    );
    Config::from_toml(&Config::default().to_redacted_toml().unwrap()).unwrap();
}

#[test]
fn environment_overrides_the_file_and_secrets_stay_hidden() {
    let mut c = Config::from_toml("listen = \"127.0.0.1:9000\"\n").unwrap();
    c.apply_env(|name| match name {
        ENV_DATABASE_URL => Some("postgres://u:hunter2@db/sms".into()),
        ENV_API_TOKENS => Some("tok-one-0123456789, tok-two-0123456789,".into()),
        ENV_LISTEN => Some("0.0.0.0:8081".into()),
        _ => None,
    });
    assert_eq!(c.listen, "0.0.0.0:8081");
    assert_eq!(c.api_tokens.len(), 2);
    assert_eq!(c.api_tokens[1].expose(), "tok-two-0123456789");
    let shown = c.to_redacted_toml().unwrap();
    let debug = format!("{c:?}");
    for leak in ["hunter2", "tok-one", "tok-two"] {
        assert!(!shown.contains(leak), "{shown}");
        assert!(!debug.contains(leak), "{debug}");
    }
}

#[test]
fn an_empty_or_short_token_is_refused_naming_the_key() {
    for tokens in [
        "[\"\"]",
        "[\"short\"]",
        "[\"long-enough-token-1\", \"   \"]",
    ] {
        let c = Config::from_toml(&format!("api_tokens = {tokens}\n")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("api_tokens["), "{tokens}: {e}");
        assert!(e.contains("at least 16 characters"), "{e}");
    }
    let c = Config::from_toml("api_tokens = [\"long-enough-token-1\"]\n").unwrap();
    c.validate().unwrap();
    // From the environment, the same rule.
    let mut c = Config::default();
    c.apply_env(|name| (name == ENV_API_TOKENS).then(|| "tiny".to_owned()));
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("SMS_API_TOKENS"), "{e}");
}

#[test]
fn a_retention_too_short_for_client_retries_is_refused_saying_why() {
    let c = Config::from_toml("[queue]\nretention_h = 0\n").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("queue.retention_h:"), "{e}");
    assert!(e.contains("idempotency"), "{e}");
    let c = Config::from_toml("[queue]\nretention_h = 1\n").unwrap();
    c.validate().unwrap();
}

#[test]
fn group_commit_rows_is_read_from_the_queue_section_and_bounded() {
    let c = Config::from_toml("[queue]\ngroup_commit_rows = 32\n").unwrap();
    assert_eq!(c.queue.group_commit_rows, 32);
    c.validate().unwrap();
    assert_eq!(
        Config::default().queue.group_commit_rows,
        sms_store::DEFAULT_MAX_ROWS
    );
    for rows in [0, 100_000] {
        let c = Config::from_toml(&format!("[queue]\ngroup_commit_rows = {rows}\n")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("queue.group_commit_rows: expected 1 to"),
            "{e}"
        );
    }
    let e = Config::from_toml("[queue]\ngroup_commit = 32\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("queue.group_commit: unknown key"), "{e}");
    assert!(e.contains("group_commit_rows"), "{e}");
    let c = Config::from_toml("[queue]\ngroup_commit_wait_us = 500\n").unwrap();
    assert_eq!(c.queue.group_commit_wait_us, Some(500));
    c.validate().unwrap();
    let c = Config::from_toml("[queue]\ngroup_commit_wait_us = 1000000\n").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("queue.group_commit_wait_us: expected at most"),
        "{e}"
    );
}

#[test]
fn the_compose_deployments_configuration_is_valid() {
    // deploy/compose.yaml mounts this file into the gateways and the sandbox.
    let c = Config::from_toml(include_str!("../../../../deploy/gateway.toml")).unwrap();
    c.validate().unwrap();
    let kinds: Vec<&str> = c
        .vendors
        .values()
        .map(|v| match v {
            VendorConfig::Aliyun(_) => "aliyun",
            VendorConfig::Tencent(_) => "tencent",
            VendorConfig::Cloopen(_) => "cloopen",
            VendorConfig::Simulated(_) => "simulated",
        })
        .collect();
    assert_eq!(kinds, ["aliyun", "cloopen", "tencent"]);
}

#[test]
fn operator_tokens_are_checked_like_api_tokens_and_never_equal_one() {
    let c = Config::from_toml(
        "api_tokens = [\"api-token-0123456789\"]\noperator_tokens = [\"short\"]\n",
    )
    .unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("operator_tokens[0] (SMS_OPERATOR_TOKENS): expected at least"),
        "{e}"
    );
    let c = Config::from_toml(
        "api_tokens = [\"api-token-0123456789\"]\noperator_tokens = [\"api-token-0123456789\"]\n",
    )
    .unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("the same token is in api_tokens"), "{e}");
    let c = Config::from_toml(
        "api_tokens = [\"api-token-0123456789\"]\noperator_tokens = [\"operator-token-0123\"]\n",
    )
    .unwrap();
    c.validate().unwrap();
}

#[test]
fn telemetry_is_off_by_default_and_bad_values_are_named() {
    assert_eq!(Config::default().telemetry.otlp_endpoint, None);
    let c = Config::from_toml(
        "[telemetry]\notlp_endpoint = \"http://collector:4318/v1/traces\"\nsample_ratio = 0.25\n",
    )
    .unwrap();
    assert_eq!(c.telemetry.sample_ratio, 0.25);
    // Tests build the `otlp` feature; without it the endpoint itself is refused.
    c.validate().unwrap();
    for (toml, key) in [
        (
            "otlp_endpoint = \"collector:4318\"",
            "telemetry.otlp_endpoint",
        ),
        ("otlp_endpoint = \"http://\"", "telemetry.otlp_endpoint"),
        ("sample_ratio = 1.5", "telemetry.sample_ratio"),
        ("service_name = \" \"", "telemetry.service_name"),
        ("export_interval_ms = 0", "telemetry.export_interval_ms"),
    ] {
        let e = Config::from_toml(&format!("[telemetry]\n{toml}\n"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(key), "{toml}: {e}");
    }
    let e = Config::from_toml("[telemetry]\notlp_endpont = \"http://c\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("otlp_endpont"), "{e}");
    let mut c = Config::default();
    c.apply_env(|name| (name == ENV_OTLP_ENDPOINT).then(|| "http://c:4318/v1/traces".into()));
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("http://c:4318/v1/traces")
    );
}

#[test]
fn receipt_secrets_name_a_vendor_fit_in_a_url_and_come_from_the_environment() {
    let c = Config::from_toml(
        "[receipts]\nsecrets = { aliyun = \"aliyun-receipts-0123456789\" }\nunknown_after_s = 600\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.receipts.unknown_after_s, 600);
    for (toml, key) in [
        (
            "secrets = { twilio = \"a-long-enough-secret-0123\" }",
            "receipts.secrets.twilio",
        ),
        (
            "secrets = { aliyun = \"short\" }",
            "receipts.secrets.aliyun",
        ),
        (
            "secrets = { aliyun = \"has/slash-and-is-long-enough\" }",
            "receipts.secrets.aliyun",
        ),
        ("unknown_after_s = 0", "receipts.unknown_after_s"),
    ] {
        let e = Config::from_toml(&format!("[receipts]\n{toml}\n"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(key), "{toml}: {e}");
        assert!(!e.contains("long-enough"), "the secret is not printed: {e}");
    }
    let mut c = Config::default();
    c.apply_env(|name| {
        (name == "SMS_RECEIPT_SECRET_TENCENT").then(|| "tencent-receipts-0123456789".into())
    });
    assert_eq!(
        c.receipts.secrets["tencent"].expose(),
        "tencent-receipts-0123456789"
    );
    assert!(!c.to_redacted_toml().unwrap().contains("tencent-receipts"));
}

#[test]
fn bad_client_configuration_is_an_error_naming_the_key() {
    let shop = "a".repeat(64);
    let templates = r#"
[templates.login_code]
text = "{1}"
vendors.aliyun = { id = "SMS_1" }
"#;
    for (toml, key) in [
        (
            format!(
                "{templates}[clients.shop]\ntoken_sha256 = [\"{shop}\"]\ntemplates = [\"login_code\", \"order_shipped\"]\n"
            ),
            "clients.shop.templates[1]: unknown template \"order_shipped\"",
        ),
        (
            format!(
                "[clients.shop]\ntoken_sha256 = [\"{shop}\"]\n[clients.app]\ntoken_sha256 = [\"{shop}\"]\n"
            ),
            "clients.shop.token_sha256[0]: the same token as clients.app.token_sha256[0]",
        ),
        (
            "[clients.shop]\ntoken_sha256 = [\"not-hex\"]\n".to_owned(),
            "clients.shop.token_sha256[0]: expected a SHA-256",
        ),
        (
            "[clients.shop]\n".to_owned(),
            "clients.shop.token_sha256: expected at least one token digest",
        ),
        (
            format!("[clients.Shop]\ntoken_sha256 = [\"{shop}\"]\n"),
            "clients.Shop: unexpected character 'S'",
        ),
        (
            format!("[clients.shop]\ntoken_sha256 = [\"{shop}\"]\nmonthly_spend_cap = \"lots\"\n"),
            "clients.shop.monthly_spend_cap: expected an amount of money like \"5000.00\", found \"lots\"",
        ),
        (
            format!("[clients.shop]\ntoken_sha256 = [\"{shop}\"]\nmonthly_spend_cap = \"-5\"\n"),
            "clients.shop.monthly_spend_cap: expected an amount above zero",
        ),
        (
            format!("[clients.shop]\ntoken_sha256 = [\"{shop}\"]\nper_second = 0\n"),
            "clients.shop.per_second: expected at least 1, found 0",
        ),
        (
            "[spend]\nmonthly_cap = \"12,000\"\n".to_owned(),
            "spend.monthly_cap: expected an amount of money",
        ),
        (
            "[spend]\nwarn_at = 1.5\n".to_owned(),
            "spend.warn_at: expected a share above 0 and at most 1",
        ),
    ] {
        let e = Config::from_toml(&format!("{toml}\n[vendors.aliyun]\norder = 0\n"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(key), "{toml}: {e}");
    }
    let e = Config::from_toml("[clients.shop]\nper_minute = 200\n").unwrap_err();
    assert!(e.to_string().contains("per_minute"), "{e}");
    let e = Config::from_toml("[clients.shop]\nmonthly_spend_cap = 5000\n").unwrap_err();
    assert!(e.to_string().contains("monthly_spend_cap"), "{e}");
    let mut c = Config::from_toml("[clients.shop-eu]\n[vendors.aliyun]\norder = 0\n").unwrap();
    c.apply_env(|name| {
        (name == "SMS_CLIENT_SHOP_EU_TOKENS").then(|| "shop-eu-token-0123456789".into())
    });
    c.validate().unwrap();
    assert!(!c.to_redacted_toml().unwrap().contains("shop-eu-token"));
}
