//! `pgstream init`.

use anyhow::Context as _;
use backup_core::{Aead, Compression, Encryption, InitOptions, Repository};

use crate::args::{EncryptionArg, InitArgs};
use crate::exit::{classified, Failure};

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let compression: Compression = args
        .compression
        .parse()
        .map_err(|e: String| classified(Failure::Usage, anyhow::anyhow!("--compression: {e}")))?;
    let encryption = match args.encryption {
        EncryptionArg::Aes256Gcm => Encryption::Aead(Aead::Aes256Gcm),
        EncryptionArg::Chacha20Poly1305 => Encryption::Aead(Aead::ChaCha20Poly1305),
        EncryptionArg::None => Encryption::None,
    };
    let passphrase = match encryption {
        Encryption::None => None,
        Encryption::Aead(_) => Some(backup_core::passphrase_from_env_or_file(
            args.repo.passphrase_file.as_deref(),
        )?),
    };
    let options = InitOptions {
        compression,
        encryption,
        ..InitOptions::default()
    };
    let repo = Repository::init(&args.repo.repo, options, passphrase.as_ref())
        .with_context(|| format!("creating repository {}", args.repo.repo))?;
    println!(
        "created repository {} (id {}, compression {}, encryption {})",
        args.repo.repo,
        repo.id(),
        compression,
        repo.aead().map(|a| a.name()).unwrap_or("none")
    );
    if repo.aead().is_some() {
        println!("keep the passphrase safe: without it nothing in this repository can be read");
    } else {
        crate::logging::notice(
            "warning",
            "the repository is not encrypted; anyone who can read it can read the backups",
        );
    }
    Ok(())
}
