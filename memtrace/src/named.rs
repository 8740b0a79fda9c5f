//! Enums whose variants users name on the command line and read in every output, spelled in
//! snake case: `oom_kill`, `page_cache`, …

/// Declares such an enum: serde and strum spell its variants in snake case, and it gets
/// `ALL` (every variant, in declaration order), `name` and `from_name`, and `Display`.
macro_rules! snake_case_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            serde::Serialize,
            serde::Deserialize,
            strum::IntoStaticStr,
            strum::EnumString,
            strum::VariantArray,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        $vis enum $name { $($body)* }

        impl $name {
            /// Every one, in declaration order.
            pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

            /// The variant's name in snake case.
            #[must_use]
            pub fn name(self) -> &'static str {
                self.into()
            }

            #[must_use]
            pub fn from_name(name: &str) -> Option<Self> {
                name.parse().ok()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(crate) use snake_case_enum;
