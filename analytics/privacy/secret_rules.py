"""The scrubber's rule table, as data: token formats, secret names, and the words around them.

Token formats follow what public secret scanners publish (gitleaks' rule set, trufflehog's
detectors, detect-secrets' plugins) and the providers' own documentation of their prefixes.
Each pattern starts with its literal prefix and is matched only where a run of token characters
starts with that prefix, so adding a format costs a dictionary entry, not another pass over the
text. Patterns are open-ended on the right: a longer run than the documented length is scrubbed
whole rather than left half visible.

Every rule's name appears in ``tests/corpus/tokens.txt`` (examples it must scrub) and in
``tests/corpus/near_misses.txt`` (look-alikes it must leave alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SECRET: Final = "<secret>"
TOKEN: Final = "<token>"
JWT: Final = "<jwt>"
PRIVATE_KEY: Final = "<private-key>"
CREDENTIALS: Final = "<credentials>"


@dataclass(frozen=True)
class TokenRule:
    """A token format: its literal prefixes and the full pattern, matched at a prefix.

    Without ``lead`` a prefix counts only where a run of token characters starts. With
    ``lead``, the prefix is an infix: it may sit anywhere in the run, ``lead`` must match the
    text right before it (an Azure secret's first four characters, a Telegram bot's numeric
    id), and the lead is scrubbed with the rest.
    """

    name: str
    prefixes: tuple[str, ...]
    pattern: str
    placeholder: str = SECRET
    lead: str | None = None


_END: Final = r"(?![A-Za-z0-9])"

TOKEN_RULES: Final[tuple[TokenRule, ...]] = (
    # -- cloud providers -------------------------------------------------------------------
    TokenRule(
        "aws_access_key_id",
        ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA", "A3T"),
        r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}" + _END,
    ),
    TokenRule("google_api_key", ("AIza",), r"AIza[\w-]{35,}"),
    TokenRule("google_oauth_token", ("ya29.",), r"ya29\.[\w-]{20,}"),
    TokenRule("google_oauth_secret", ("GOCSPX-",), r"GOCSPX-[\w-]{24,}"),
    TokenRule("digitalocean_token", ("dop_v1_", "doo_v1_", "dor_v1_"), r"do[opr]_v1_[a-fA-F0-9]{40,}"),
    # Azure DevOps identifiable PATs (84 characters) carry "AZDO" at offset 76.
    TokenRule("azure_devops_pat", ("AZDO",), r"AZDO[A-Za-z0-9]{4}" + _END, lead=r"[A-Za-z0-9]{76}$"),
    TokenRule("databricks_token", ("dapi",), r"dapi[a-f0-9]{32}(?:-\d)?" + _END),
    TokenRule("heroku_api_key_v2", ("HRKU-",), r"HRKU-[\w-]{30,}"),
    TokenRule("flyio_token", ("fo1_", "fm1_", "fm2_"), r"f(?:o1|m[12][ar]?)_[\w+/=-]{30,}"),
    TokenRule("alibaba_access_key_id", ("LTAI",), r"LTAI[A-Za-z0-9]{12,24}" + _END),
    TokenRule("tencent_secret_id", ("AKID",), r"AKID[A-Za-z0-9]{32}" + _END),
    # -- source hosting and CI -------------------------------------------------------------
    TokenRule(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{22,})",
    ),
    TokenRule(
        "gitlab_token",
        (
            "glpat-",
            "gldt-",
            "glrt-",
            "glptt-",
            "glsoat-",
            "glcbt-",
            "glft-",
            "glimt-",
            "glagent-",
            "gloas-",
            "glffct-",
            "GR1348941",
        ),
        r"(?:gl(?:pat|dt|rt|ptt|soat|cbt|ft|imt|agent|oas|ffct)-|GR1348941)[\w.-]{20,}",
    ),
    TokenRule("bitbucket_app_password", ("ATBB",), r"ATBB[A-Za-z0-9_=.-]{28,}"),
    TokenRule("atlassian_api_token", ("ATATT3", "ATCTT3"), r"AT[AC]TT3[\w=-]{40,}"),
    TokenRule("npm_token", ("npm_",), r"npm_[A-Za-z0-9]{36,}"),
    TokenRule("pypi_token", ("pypi-",), r"pypi-Ag[\w-]{50,}"),
    TokenRule("rubygems_token", ("rubygems_",), r"rubygems_[a-f0-9]{48,}"),
    TokenRule("nuget_key", ("oy2",), r"oy2[a-z0-9]{43}" + _END),
    TokenRule("clojars_token", ("CLOJARS_",), r"CLOJARS_[a-z0-9]{60}" + _END),
    TokenRule("dockerhub_pat", ("dckr_pat_", "dckr_oat_"), r"dckr_[po]at_[\w-]{27,}"),
    TokenRule("pulumi_token", ("pul-",), r"pul-[a-f0-9]{40}" + _END),
    TokenRule("octopus_api_key", ("API-",), r"API-[A-Z0-9]{26,}" + _END),
    TokenRule("sonarqube_token", ("squ_", "sqp_", "sqa_"), r"sq[upa]_[a-f0-9]{40}" + _END),
    TokenRule("terraform_cloud_token", (".atlasv1.",), r"\.atlasv1\.[\w=-]{60,}", lead=r"[A-Za-z0-9]{14}$"),
    TokenRule("hashicorp_vault_token", ("hvs.", "hvb.", "hvr."), r"hv[sbr]\.[\w-]{24,}"),
    TokenRule(
        "doppler_token",
        ("dp.pt.", "dp.st.", "dp.sa.", "dp.ct.", "dp.scim.", "dp.audit."),
        r"dp\.(?:st\.[a-z0-9_-]{2,35}\.|[a-z]+\.)[A-Za-z0-9]{40,}",
    ),
    TokenRule("openshift_token", ("sha256~",), r"sha256~[\w-]{43}"),
    TokenRule("prefect_token", ("pnu_",), r"pnu_[A-Za-z0-9]{36}" + _END),
    TokenRule("readme_token", ("rdme_",), r"rdme_[a-z0-9]{70}" + _END),
    TokenRule("scalingo_token", ("tk-us-",), r"tk-us-[\w-]{48}"),
    TokenRule("tailscale_key", ("tskey-",), r"tskey-(?:api|auth|client|scim|webhook)-[\w-]{10,}"),
    TokenRule("settlemint_token", ("sm_pat_", "sm_aat_", "sm_sat_"), r"sm_[pas]at_[A-Za-z0-9]{16,}"),
    TokenRule("supabase_key", ("sbp_", "sb_secret_"), r"(?:sbp_[a-f0-9]{40}|sb_secret_[\w-]{20,})"),
    TokenRule("netlify_token", ("nfp_", "nfc_", "nfo_"), r"nf[pco]_[A-Za-z0-9]{36,}"),
    TokenRule("linear_api_key", ("lin_api_", "lin_oauth_"), r"lin_(?:api|oauth)_[A-Za-z0-9]{40,}"),
    TokenRule("figma_token", ("figd_", "figu_"), r"fig[du]_[\w-]{40,}"),
    TokenRule(
        "planetscale_token",
        ("pscale_tkn_", "pscale_pw_", "pscale_oauth_"),
        r"pscale_(?:tkn|pw|oauth)_[\w=.-]{32,}",
    ),
    TokenRule(
        "grafana_token",
        ("glc_", "glsa_"),
        r"(?:glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})",
    ),
    TokenRule("sentry_token", ("sntrys_", "sntryu_"), r"(?:sntrys_eyJ[\w=+/-]{40,}|sntryu_[a-f0-9]{64})"),
    TokenRule("postman_api_key", ("PMAK-",), r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}" + _END),
    TokenRule("typeform_token", ("tfp_",), r"tfp_[\w.=-]{40,}"),
    TokenRule("frameio_token", ("fio-u-",), r"fio-u-[\w=-]{64,}"),
    TokenRule("airtable_pat", ("pat",), r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}" + _END),
    TokenRule(
        "harness_token", ("pat.", "sat."), r"[ps]at\.[\w-]{22}\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{20}" + _END
    ),
    TokenRule(
        "sourcegraph_token",
        ("sgp_",),
        r"sgp_(?:(?:[a-fA-F0-9]{16}|local)_)?[a-fA-F0-9]{40}" + _END,
    ),
    TokenRule("cloudflare_origin_ca_key", ("v1.0-",), r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}" + _END),
    # Short-lived tokens are 130-odd characters and newer ones (sl.u.) much longer.
    TokenRule("dropbox_token", ("sl.",), r"sl\.[\w=.-]{130,}"),
    TokenRule(
        "launchdarkly_key",
        ("api-", "sdk-", "mob-"),
        r"(?:api|sdk|mob)-[a-f0-9]{8}-[a-f0-9]{4}-4[a-f0-9]{3}-[a-f0-9]{4}-[a-f0-9]{12}" + _END,
    ),
    TokenRule("dynatrace_token", ("dt0c01.",), r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}" + _END),
    TokenRule(
        "age_secret_key", ("AGE-SECRET-KEY-1",), r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"
    ),
    # -- messaging and e-mail --------------------------------------------------------------
    TokenRule(
        "slack_token",
        ("xoxb-", "xoxp-", "xoxa-", "xoxo-", "xoxs-", "xoxr-", "xoxe-", "xoxc-", "xoxe.", "xapp-"),
        r"(?:xox[abposrec]-|xoxe\.xox[bp]-|xapp-)[A-Za-z0-9-]{10,}",
    ),
    TokenRule("telegram_bot_token", ("AA",), r"AA[\w-]{33}" + r"(?![\w-])", lead=r"(?:bot)?\d{8,10}:$"),
    TokenRule("sendgrid_api_key", ("SG.",), r"SG\.[\w-]{16,32}\.[\w-]{16,64}"),
    TokenRule("mailgun_key", ("key-", "pubkey-"), r"(?:pub)?key-[a-f0-9]{32}" + _END),
    TokenRule("twilio_key", ("SK", "AC"), r"(?:SK|AC)[a-z0-9]{32}" + _END),
    TokenRule("mailchimp_api_key", ("-us",), r"-us\d{1,2}" + _END, lead=r"[a-f0-9]{32}$"),
    TokenRule(
        "discord_bot_token", ("M", "N", "O"), r"[MNO][\w-]{23,25}\.[\w-]{6}\.[\w-]{27,38}" + r"(?![\w-])"
    ),
    # -- payments and commerce -------------------------------------------------------------
    TokenRule(
        "stripe_key",
        ("sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_", "whsec_"),
        r"(?:[rs]k_(?:live|test|prod)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9+/=]{24,})",
    ),
    TokenRule(
        "shopify_token", ("shpat_", "shpca_", "shppa_", "shpss_"), r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32,}"
    ),
    TokenRule(
        "square_token", ("sq0atp-", "sq0csp-", "EAAA"), r"(?:sq0(?:atp|csp)-[\w-]{22,}|EAAA[\w-]{60,})"
    ),
    TokenRule("shippo_token", ("shippo_live_", "shippo_test_"), r"shippo_(?:live|test)_[a-fA-F0-9]{40}"),
    TokenRule("duffel_token", ("duffel_live_", "duffel_test_"), r"duffel_(?:live|test)_[\w=-]{43,}"),
    TokenRule("easypost_key", ("EZAK", "EZTK"), r"EZ[AT]K[a-zA-Z0-9]{54}"),
    TokenRule(
        "flutterwave_key",
        ("FLWSECK_TEST-", "FLWSECK-", "FLWPUBK_TEST-", "FLWPUBK-"),
        r"FLW(?:SEC|PUB)K(?:_TEST)?-[a-hA-H0-9]{12,}-X",
    ),
    # -- AI providers ----------------------------------------------------------------------
    TokenRule(
        "openai_anthropic_key",
        ("sk-",),
        r"sk-(?:ant-(?:api|admin|oat|sid)\d\d-|proj-|svcacct-|admin-|None-)?[\w-]{20,}",
    ),
    TokenRule("huggingface_token", ("hf_", "api_org_"), r"(?:hf|api_org)_[A-Za-z0-9]{30,}"),
    TokenRule("groq_key", ("gsk_",), r"gsk_[A-Za-z0-9]{40,}"),
    TokenRule("xai_key", ("xai-",), r"xai-[A-Za-z0-9]{60,}"),
    TokenRule("perplexity_key", ("pplx-",), r"pplx-[A-Za-z0-9]{40,}"),
    TokenRule("replicate_token", ("r8_",), r"r8_[A-Za-z0-9]{30,}"),
    TokenRule("langsmith_key", ("lsv2_pt_", "lsv2_sk_"), r"lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}"),
    TokenRule("elevenlabs_key", ("sk_",), r"sk_[a-f0-9]{48}" + _END),
    # -- observability and data ------------------------------------------------------------
    TokenRule(
        "newrelic_key",
        ("NRAK-", "NRJS-", "NRII-", "NRAA-", "NRRA-"),
        r"NR(?:AK|JS|II|AA|RA)-[A-Za-z0-9-]{19,}",
    ),
    TokenRule("posthog_personal_key", ("phx_",), r"phx_[A-Za-z0-9]{20,}"),
    TokenRule(
        "artifactory_token", ("AKC", "AP"), r"(?:AKC[a-zA-Z0-9]{10,}|AP[0-9ABCDEF][a-zA-Z0-9]{8,})" + _END
    ),
    TokenRule("mapbox_token", ("pk.eyJ", "sk.eyJ"), r"[ps]k\.eyJ[\w.-]{20,}"),
    TokenRule("jwt", ("eyJ",), r"eyJ[\w-]{8,}\.[\w-]{8,}(?:\.[\w-]*)?", placeholder=JWT),
    # -- password managers -----------------------------------------------------------------
    TokenRule("onepassword_service_token", ("ops_eyJ",), r"ops_eyJ[A-Za-z0-9+/_-]{100,}={0,3}"),
    TokenRule(
        "onepassword_secret_key",
        ("A3-",),
        r"A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}" + _END,
    ),
    # Azure AD client secrets have no prefix; their fourth to sixth characters are `\dQ~`.
    TokenRule("azure_ad_client_secret", ("Q~",), r"Q~[\w~.-]{31,34}" + r"(?![\w~.-])", lead=r"[\w~.]{3}\d$"),
)

# URLs whose path carries the credential (webhooks); found by their host, which is literal.
URL_RULES: Final[tuple[tuple[str, str], ...]] = (
    ("hooks.slack.com/", r"hooks\.slack\.com/(?:services|workflows|triggers)/[\w/-]+"),
    ("discord.com/api/webhooks/", r"discord(?:app)?\.com/api/webhooks/[\w/-]+"),
    ("discordapp.com/api/webhooks/", r"discord(?:app)?\.com/api/webhooks/[\w/-]+"),
    ("webhook.office.com/", r"[\w-]+\.webhook\.office\.com/webhookb2/[\w@/-]+"),
    ("api.telegram.org/bot", r"api\.telegram\.org/bot\d+:[\w-]+"),
)

# Ids LLM providers put in every answer and error (OpenAI's, Anthropic's): random-looking, but
# not credentials, and what a support request needs. The entropy fallback leaves a run starting
# with one alone; token formats still apply first.
PUBLIC_ID_PREFIXES: Final = (
    "req_",
    "msg_",
    "toolu_",
    "srvtoolu_",
    "msgbatch_",
    "chatcmpl-",
    "cmpl-",
    "resp_",
    "file-",
    "asst_",
    "thread_",
    "run_",
    "step_",
    "call_",
    "batch_",
    "ftjob-",
    "vs_",
)


# -- secret names -----------------------------------------------------------------------------
# A name that contains one of these anywhere (glued or not) names a secret value.
STRONG_NAME_PARTS: Final = (
    "password",
    "passwd",
    "passphrase",
    "passwort",
    "contrasena",
    "contraseña",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "privatekey",
    "private_key",
    "private-key",
    "privkey",
    "priv_key",
    "accesskey",
    "access_key",
    "access-key",
    "authtoken",
    "auth_token",
    "auth-token",
    "accesstoken",
    "access_token",
    "refreshtoken",
    "refresh_token",
    "credential",
)
# Names of values that embed credentials (a database URL, a Sentry DSN): redacted whole.
SECRET_HOLDER_NAMES: Final = (
    "dsn",
    "databaseurl",
    "database_url",
    "database-url",
    "db_url",
    "connectionstring",
    "connection_string",
    "conn_str",
)
# Whole name segments (after splitting on separators and camelCase) that name a secret.
SECRET_SEGMENTS: Final = frozenset(
    {"token", "pass", "pw", "pwd", "pat", "creds", "auth", "authorization", "cookie", "sig", "signature"}
)
# Segments that need a credential-looking value: "key" names all sorts of things.
KEY_SEGMENTS: Final = frozenset({"key", "keys"})
# "key" after these is not a secret: a cache key, a public key, a primary key.
NOT_SECRET_KEY_KINDS: Final = frozenset(
    {
        "public",
        "pub",
        "cache",
        "sort",
        "primary",
        "foreign",
        "partition",
        "idempotency",
        "object",
        "row",
        "dict",
        "lookup",
        "group",
        "cursor",
        "routing",
        "shard",
        "map",
        "index",
        "unique",
        "composite",
        "hot",
        "short",
        "event",
        "metric",
        "label",
        "translation",
        "i18n",
    }
)
# A last segment that says the value is about the secret, not the secret itself.
ABOUT_A_SECRET: Final = frozenset(
    {
        "count",
        "counts",
        "length",
        "len",
        "type",
        "types",
        "name",
        "names",
        "id",
        "ids",
        "expiry",
        "expires",
        "expired",
        "expiration",
        "ttl",
        "timeout",
        "policy",
        "required",
        "enabled",
        "file",
        "path",
        "dir",
        "endpoint",
        "usage",
        "limit",
        "limits",
        "max",
        "min",
        "size",
        "status",
        "valid",
        "validation",
        "field",
        "fields",
        "prompt",
        "label",
        "hint",
        "set",
        "present",
        "provided",
        "source",
        "env",
        "var",
        "header",
        "version",
        "format",
        "kind",
        "mode",
        "rotation",
        "age",
        "changed",
        "reset",
        "hash",
        "algorithm",
        "strength",
        "manager",
        "store",
        "provider",
        "url",
        "uri",
        "location",
        "ref",
        "arn",
        "index",
        "budget",
        "estimate",
        "estimator",
        "ratio",
        "rate",
        "ms",
        "seconds",
        "at",
    }
)
# Names that contain a secret word but hold none.
NOT_SECRET_NAMES: Final = frozenset(
    {"pwd", "oldpwd", "cwd", "secretary", "passed", "passes", "passing", "bypass", "compass", "pat"}
)
# Auth schemes written before a credential ("Authorization: Bearer abc").
AUTH_SCHEMES: Final = frozenset(
    {
        "bearer",
        "basic",
        "token",
        "digest",
        "negotiate",
        "ntlm",
        "api-token",
        "apikey",
        "api-key",
        "sso-key",
        "key",
        "dsn",
        "sentry",
        "splunk",
        "jwt",
        "oauth",
        "hmac",
        "aws4-hmac-sha256",
        "sharedkey",
        "pvetoken",
        "glpat",
        "klaviyo-api-key",
    }
)
# An unquoted value after "name:" that reads as a status, not a secret ("token: expired").
STATUS_WORDS: Final = frozenset(
    {
        "expired",
        "invalid",
        "missing",
        "none",
        "null",
        "nil",
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "required",
        "empty",
        "undefined",
        "revoked",
        "unset",
        "set",
        "redacted",
        "hidden",
        "masked",
        "present",
        "absent",
        "ok",
        "valid",
        "rejected",
        "denied",
        "refreshed",
        "rotated",
        "updated",
        "changed",
        "incorrect",
        "wrong",
        "failed",
        "unknown",
        "optional",
        "disabled",
        "enabled",
        "found",
        "ignored",
        "skipped",
        "default",
        "n/a",
    }
)
# Account names that identify a role, not a person: never scrubbed as words (their homes are).
SYSTEM_ACCOUNTS: Final = frozenset(
    {
        "root",
        "admin",
        "administrator",
        "user",
        "users",
        "ubuntu",
        "debian",
        "ec2-user",
        "centos",
        "fedora",
        "runner",
        "vagrant",
        "guest",
        "nobody",
        "daemon",
        "www-data",
        "postgres",
        "mysql",
        "docker",
        "jenkins",
        "circleci",
        "codespace",
        "vscode",
        "node",
        "app",
        "default",
        "test",
        "build",
        "builder",
        "ci",
        "pi",
        "home",
        "host",
        "email",
        "secret",
        "token",
        "jwt",
        "credentials",
        "system",
        "local",
        "service",
    }
)
