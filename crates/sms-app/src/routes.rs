//! Which vendors can send which template: said by `config check` and at start-up, so
//! that a template only one vendor can send (no failover possible) is seen before the
//! first outage, not during it.

use sms_core::{Templates, VendorId};

/// What one line of the report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A template several vendors can send.
    Routed {
        /// The logical template.
        template: String,
        /// Its vendors, in configured order.
        vendors: Vec<String>,
    },
    /// A template only one vendor can send: no failover for it.
    SingleVendor {
        /// The logical template.
        template: String,
        /// Its one vendor.
        vendor: String,
    },
    /// No templates: names pass through to every vendor.
    PassThrough {
        /// How many vendors are configured.
        vendors: usize,
    },
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Routed { template, vendors } => {
                write!(f, "template {template}: {}", vendors.join(", "))
            }
            Self::SingleVendor { template, vendor } => write!(
                f,
                "template {template}: only {vendor} can send it, so it has no failover"
            ),
            Self::PassThrough { vendors } if *vendors > 1 => write!(
                f,
                "no [templates]: each caller's template name goes unchanged to all {vendors} \
                 vendors, but each vendor approves its own template ids, so failover between \
                 real vendors needs [templates]"
            ),
            Self::PassThrough { .. } => write!(
                f,
                "no [templates]: each caller's template name goes unchanged to the one vendor"
            ),
        }
    }
}

impl Line {
    /// Whether the line is a warning.
    pub fn is_warning(&self) -> bool {
        match self {
            Self::Routed { .. } => false,
            Self::SingleVendor { .. } => true,
            Self::PassThrough { vendors } => *vendors > 1,
        }
    }
}

/// The report for `templates` over `vendors` (configured order), one line per
/// template.
pub fn report(templates: &Templates, vendors: &[VendorId]) -> Vec<Line> {
    if templates.is_pass_through() {
        return vec![Line::PassThrough {
            vendors: vendors.len(),
        }];
    }
    templates
        .iter()
        .map(|(name, template)| {
            let mut able: Vec<String> = vendors
                .iter()
                .filter(|v| template.at(v).is_some())
                .map(|v| v.to_string())
                .collect();
            if able.len() == 1 {
                Line::SingleVendor {
                    template: name.to_owned(),
                    vendor: able.remove(0),
                }
            } else {
                Line::Routed {
                    template: name.to_owned(),
                    vendors: able,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<VendorId> {
        names.iter().map(|n| VendorId::new(n).unwrap()).collect()
    }

    #[test]
    fn each_template_lists_its_vendors_and_a_single_vendor_is_a_warning() {
        let templates: Templates = serde_json::from_value(serde_json::json!({
            "login_code": {"vendors": {"aliyun": {"id": "SMS_1"}, "tencent": {"id": "1"}}},
            "notice": {"vendors": {"cloopen": {"id": "9"}}},
        }))
        .unwrap();
        let lines = report(&templates, &ids(&["tencent", "aliyun", "cloopen"]));
        assert_eq!(lines[0].to_string(), "template login_code: tencent, aliyun");
        assert!(!lines[0].is_warning());
        assert_eq!(
            lines[1].to_string(),
            "template notice: only cloopen can send it, so it has no failover"
        );
        assert!(lines[1].is_warning());
    }

    #[test]
    fn pass_through_warns_only_with_several_vendors() {
        let one = report(&Templates::default(), &ids(&["aliyun"]));
        assert!(!one[0].is_warning());
        let three = report(&Templates::default(), &ids(&["a", "b", "c"]));
        assert!(three[0].is_warning());
        assert!(three[0].to_string().contains("needs [templates]"));
    }
}

#[cfg(test)]
mod documented {
    use super::*;
    use crate::config::Config;

    /// The first TOML block after `heading` in `doc`.
    fn toml_after(doc: &str, heading: &str) -> String {
        let from = doc.find(heading).expect("the section exists");
        let rest = &doc[from..];
        let start = rest.find("```toml\n").expect("a TOML block") + "```toml\n".len();
        let end = rest[start..].find("```").expect("the block ends");
        rest[start..start + end].to_owned()
    }

    fn ids(config: &Config) -> Vec<VendorId> {
        config
            .vendors_in_order()
            .into_iter()
            .map(|(name, _)| VendorId::new(name).unwrap())
            .collect()
    }

    #[test]
    fn the_readme_and_operations_configurations_load_with_every_template_at_its_vendors() {
        let readme = toml_after(include_str!("../../../README.md"), "## Real vendors");
        let operations = toml_after(
            include_str!("../../../docs/OPERATIONS.md"),
            "## Templates and real vendors",
        );
        for (doc, text) in [("README", readme), ("OPERATIONS", operations)] {
            let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{doc}: {e:#}"));
            config.validate().unwrap_or_else(|e| panic!("{doc}: {e:#}"));
            let lines = report(&config.templates, &ids(&config));
            assert_eq!(
                lines[0],
                Line::Routed {
                    template: "login_code".into(),
                    vendors: vec!["aliyun".into(), "tencent".into(), "cloopen".into()],
                },
                "{doc}"
            );
        }
    }
}
