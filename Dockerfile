# The gateway's image: `sms-app` built in a Rust image, run from a slim Debian image as
# a user without privileges. `deploy/compose.yaml` runs it with PostgreSQL, Redis and
# the vendor sandbox.
#
#   docker build -t sms-gateway .
#   docker run -p 8080:8080 -e SMS_API_TOKENS=a-long-secret-token-value sms-gateway
#
# Configuration comes from the environment (SMS_API_TOKENS, SMS_DATABASE_URL,
# SMS_REDIS_URL, SMS_LISTEN, the vendors' SMS_ALIYUN_*, SMS_TENCENT_*, SMS_CLOOPEN_*, and
# SMS_OTLP_ENDPOINT to export traces: the image is built with the `otlp` feature) or
# from a file mounted at /etc/sms-gateway/gateway.toml and named with --config. Without
# a database URL the gateway keeps its queue in /var/lib/sms-gateway (a volume).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sms-app --bin sms-app --features otlp \
 && cp target/release/sms-app /usr/local/bin/sms-app

FROM debian:bookworm-slim
# curl answers the health check; ca-certificates let the vendor adapters reach HTTPS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sms-gateway --create-home sms
COPY --from=build /usr/local/bin/sms-app /usr/local/bin/sms-app
USER sms
WORKDIR /var/lib/sms-gateway
VOLUME /var/lib/sms-gateway
ENV SMS_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["sms-app"]
CMD ["serve"]
