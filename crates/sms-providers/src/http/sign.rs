//! The vendors' request signers, as pure functions of their inputs.
//!
//! Nothing here reads the clock, the environment or a random source: the timestamp and
//! nonce are arguments, so each signer can be checked byte for byte against the vendor's
//! published worked example, and the sandbox can verify a request with the same code
//! path the adapter used to sign it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset, Utc};
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use sha2::Sha256;

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`) is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `input` the way Aliyun's RPC signature wants it (RFC 3986): UTF-8
/// bytes, upper-case hex, space as `%20` (never `+`), `*` as `%2A`, `~` kept.
pub fn percent_encode(input: &str) -> String {
    utf8_percent_encode(input, RFC3986).to_string()
}

/// Aliyun's canonicalised query string: parameters sorted by key, key and value
/// percent-encoded, joined as `k=v&k=v`. `Signature` itself must not be among them.
pub fn aliyun_canonical_query<K, V>(params: &[(K, V)]) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    // Keys are ASCII, so byte order is the order the vendor sorts in.
    sorted.sort_unstable();
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// Aliyun's string to sign: `METHOD&%2F&` + percent-encode(canonical query).
pub fn aliyun_string_to_sign<K, V>(method: &str, params: &[(K, V)]) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&aliyun_canonical_query(params))
    )
}

/// Aliyun RPC signature v1: base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn aliyun_signature<K, V>(method: &str, params: &[(K, V)], access_key_secret: &str) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{access_key_secret}&").as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(aliyun_string_to_sign(method, params).as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Aliyun's `Timestamp` parameter: UTC, `yyyy-MM-ddTHH:mm:ssZ`.
pub fn aliyun_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The content type Tencent Cloud's signature covers; the request must send exactly it.
pub const TC3_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// What a TC3-HMAC-SHA256 signature is computed from (POST, JSON body, headers
/// `content-type` and `host` signed).
#[derive(Debug, Clone, Copy)]
pub struct Tc3Input<'a> {
    /// The SecretId (public half of the key pair).
    pub secret_id: &'a str,
    /// The SecretKey.
    pub secret_key: &'a str,
    /// The product, e.g. `sms` (also the first label of the host).
    pub service: &'a str,
    /// The `Host` header exactly as sent (with `:port` when the port is not the default).
    pub host: &'a str,
    /// `X-TC-Timestamp`, Unix seconds.
    pub timestamp: i64,
    /// The request body, byte for byte as sent.
    pub payload: &'a str,
}

/// Every intermediate of a TC3 signature, so a test can compare each step with the
/// vendor's worked example and the sandbox can explain a mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Signature {
    /// Step 1: the canonical request.
    pub canonical_request: String,
    /// Step 2: the string to sign.
    pub string_to_sign: String,
    /// Step 3: lower-case hex signature.
    pub signature: String,
    /// Step 4: the `Authorization` header value.
    pub authorization: String,
}

fn hmac_sha256(key: &[u8], message: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The UTC date (`YYYY-MM-DD`) of a Unix timestamp, as TC3's credential scope needs it.
/// Local time would make requests sent just after midnight in UTC+8 fail.
pub fn tc3_date(timestamp: i64) -> String {
    DateTime::<Utc>::from_timestamp(timestamp, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// Tencent Cloud API 3.0 signature (TC3-HMAC-SHA256) of a POST with a JSON body.
pub fn tc3_sign(input: &Tc3Input<'_>) -> Tc3Signature {
    let hashed_payload = hex::encode(Sha256::digest(input.payload.as_bytes()));
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{TC3_CONTENT_TYPE}\nhost:{}\n\ncontent-type;host\n{hashed_payload}",
        input.host
    );
    let date = tc3_date(input.timestamp);
    let scope = format!("{date}/{}/tc3_request", input.service);
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{}\n{scope}\n{}",
        input.timestamp,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let secret_date = hmac_sha256(format!("TC3{}", input.secret_key).as_bytes(), &date);
    let secret_service = hmac_sha256(&secret_date, input.service);
    let secret_signing = hmac_sha256(&secret_service, "tc3_request");
    let signature = hex::encode(hmac_sha256(&secret_signing, &string_to_sign));
    let authorization = format!(
        "TC3-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=content-type;host, Signature={signature}",
        input.secret_id
    );
    Tc3Signature {
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    }
}

/// Cloopen's timestamp: `yyyyMMddHHmmss` in Beijing time (UTC+8), whatever the host's zone.
pub fn cloopen_timestamp(at: DateTime<Utc>) -> String {
    let beijing = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    at.with_timezone(&beijing)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// Cloopen's `sig` query parameter: upper-case hex MD5(accountSid + authToken + timestamp).
pub fn cloopen_sig(account_sid: &str, auth_token: &str, timestamp: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(account_sid.as_bytes());
    md5.update(auth_token.as_bytes());
    md5.update(timestamp.as_bytes());
    hex::encode_upper(md5.finalize())
}

/// Cloopen's `Authorization` header: standard base64 of `accountSid:timestamp`.
pub fn cloopen_authorization(account_sid: &str, timestamp: &str) -> String {
    BASE64.encode(format!("{account_sid}:{timestamp}"))
}

/// Decodes a Cloopen `Authorization` header into `(accountSid, timestamp)`.
pub fn cloopen_parse_authorization(header: &str) -> Option<(String, String)> {
    let bytes = BASE64.decode(header.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (sid, ts) = text.split_once(':')?;
    Some((sid.to_owned(), ts.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The worked example of Aliyun's SMS API documentation ("HTTP协议及签名"): key id
    /// `testId`, secret `testSecret`, SendSms to 15300000001 with sign name
    /// 阿里云短信测试专用, template SMS_71390007, nonce 45e25e9b-…, 2017-07-12T02:42:19Z.
    /// The published string to sign and signature are reproduced byte for byte.
    fn aliyun_doc_params() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("AccessKeyId", "testId"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Format", "XML"),
            ("Action", "SendSms"),
            ("Version", "2017-05-25"),
            ("RegionId", "cn-hangzhou"),
            ("PhoneNumbers", "15300000001"),
            ("SignName", "阿里云短信测试专用"),
            ("TemplateParam", "{\"customer\":\"test\"}"),
            ("TemplateCode", "SMS_71390007"),
            ("OutId", "123"),
        ]
    }

    #[test]
    fn aliyun_signer_reproduces_the_published_sms_example() {
        let params = aliyun_doc_params();
        assert_eq!(
            aliyun_canonical_query(&params),
            "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001\
             &RegionId=cn-hangzhou&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95%E4%B8%93%E7%94%A8\
             &SignatureMethod=HMAC-SHA1&SignatureNonce=45e25e9b-0a6f-4070-8c85-2956eda1b466\
             &SignatureVersion=1.0&TemplateCode=SMS_71390007\
             &TemplateParam=%7B%22customer%22%3A%22test%22%7D&Timestamp=2017-07-12T02%3A42%3A19Z\
             &Version=2017-05-25"
        );
        assert_eq!(
            aliyun_string_to_sign("GET", &params),
            "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123\
             %26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598%25BF\
             %25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4%25BF%25A1%25E6%25B5%258B%25E8%25AF\
             %2595%25E4%25B8%2593%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce\
             %3D45e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0%26TemplateCode\
             %3DSMS_71390007%26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D\
             %26Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25"
        );
        assert_eq!(
            aliyun_signature("GET", &params, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
        // The same request as a POST signs differently: the method is part of the string.
        assert_ne!(
            aliyun_signature("POST", &params, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
    }

    #[test]
    fn percent_encoding_follows_rfc3986_not_form_encoding() {
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("~-_."), "~-_.");
        assert_eq!(percent_encode("+/=&:"), "%2B%2F%3D%26%3A");
        // Non-ASCII text is encoded as its UTF-8 bytes, upper-case hex.
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("验证码"), "%E9%AA%8C%E8%AF%81%E7%A0%81");
        assert_eq!(percent_encode("😀"), "%F0%9F%98%80");
        assert_eq!(percent_encode(""), "");
    }

    proptest::proptest! {
        #[test]
        fn percent_encoding_is_reversible_and_leaves_only_unreserved_and_escapes(input in "\\PC{0,40}") {
            let encoded = percent_encode(&input);
            let bytes = encoded.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let b = bytes[i];
                if b == b'%' {
                    // An escape is `%` and two upper-case hex digits.
                    proptest::prop_assert!(i + 3 <= bytes.len(), "{}", encoded);
                    let hex_pair = &encoded[i + 1..i + 3];
                    proptest::prop_assert!(hex_pair.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)), "{}", encoded);
                    i += 3;
                } else {
                    proptest::prop_assert!(b.is_ascii_alphanumeric() || b"-_.~".contains(&b), "{}", encoded);
                    i += 1;
                }
            }
            let decoded = percent_encoding::percent_decode_str(&encoded).decode_utf8().unwrap();
            proptest::prop_assert_eq!(decoded, input);
        }
    }

    #[test]
    fn aliyun_canonical_query_sorts_by_key_and_encodes_both_sides() {
        let params = [("b", "x y"), ("a*", "1~2"), ("B", "*")];
        assert_eq!(aliyun_canonical_query(&params), "B=%2A&a%2A=1~2&b=x%20y");
    }

    #[test]
    fn aliyun_timestamp_is_utc_with_z() {
        let at = Utc.with_ymd_and_hms(2017, 7, 12, 2, 42, 19).unwrap();
        assert_eq!(aliyun_timestamp(at), "2017-07-12T02:42:19Z");
    }

    /// Tencent Cloud's published worked example ("Signature v3", API 3.0 docs):
    /// DescribeInstances on cvm.tencentcloudapi.com at 1551113065 with SecretKey
    /// `Gu5t9xGARNpq86cd98joQYCN3EXAMPLE`. Every published intermediate is reproduced:
    /// payload hash 35e9c5b0…, canonical request hash 5ffe6a04…, signature 72e494ea….
    #[test]
    fn tc3_signer_reproduces_tencents_published_example() {
        let payload = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let signed = tc3_sign(&Tc3Input {
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            service: "cvm",
            host: "cvm.tencentcloudapi.com",
            timestamp: 1_551_113_065,
            payload,
        });
        assert_eq!(
            signed.canonical_request,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n\
             content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            signed.string_to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            signed.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn tc3_date_is_the_utc_date_not_beijings() {
        // 1551113065 is 2019-02-26 00:44:25 in UTC+8 but still 2019-02-25 in UTC.
        assert_eq!(tc3_date(1_551_113_065), "2019-02-25");
    }

    /// Cloopen publishes no worked example with a full token. The expected values were
    /// computed independently, by hand, with python3's hashlib.md5 and base64 over the
    /// same made-up account id, token and timestamp, and pasted here as literals.
    #[test]
    fn cloopen_sig_and_authorization_match_independently_computed_values() {
        let sid = "8a216da8588b296f01588b3bb3e30005";
        let token = "0bf04b5ae1dc4ba7b2d1a6fcf8e72ef0";
        let ts = "20170712104219";
        assert_eq!(
            cloopen_sig(sid, token, ts),
            "3766E97599200F95F915728A553C0AFA"
        );
        assert_eq!(
            cloopen_authorization(sid, ts),
            "OGEyMTZkYTg1ODhiMjk2ZjAxNTg4YjNiYjNlMzAwMDU6MjAxNzA3MTIxMDQyMTk="
        );
        assert_eq!(
            cloopen_parse_authorization(&cloopen_authorization(sid, ts)),
            Some((sid.to_owned(), ts.to_owned()))
        );
        assert_eq!(cloopen_parse_authorization("not base64!"), None);
    }

    #[test]
    fn cloopen_timestamp_is_beijing_time() {
        // 02:42:19 UTC is 10:42:19 in Beijing; 20:00 UTC is already the next day there.
        let at = Utc.with_ymd_and_hms(2017, 7, 12, 2, 42, 19).unwrap();
        assert_eq!(cloopen_timestamp(at), "20170712104219");
        let late = Utc.with_ymd_and_hms(2017, 7, 12, 20, 0, 0).unwrap();
        assert_eq!(cloopen_timestamp(late), "20170713040000");
    }
}
