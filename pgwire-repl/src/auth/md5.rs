//! MD5 password authentication (request code 5).

/// The PasswordMessage body for MD5 authentication (without the trailing NUL):
/// `"md5" + hex(md5(hex(md5(password || user)) || salt))`.
pub fn md5_password_message(user: &str, password: &str, salt: [u8; 4]) -> String {
    let mut input = Vec::with_capacity(password.len() + user.len());
    input.extend_from_slice(password.as_bytes());
    input.extend_from_slice(user.as_bytes());
    let inner = hex::encode(md5(&input));
    wipe(&mut input);

    let mut outer = inner.into_bytes();
    outer.extend_from_slice(&salt);
    format!("md5{}", hex::encode(md5(&outer)))
}

/// MD5 (RFC 1321), written out so that this cannot fail: OpenSSL refuses MD5 under a
/// FIPS-only provider, and a panic or error there would hide the server's own refusal.
fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(abs(sin(i + 1)) * 2^32).
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ];
    let mut state: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes(chunk[i * 4..i * 4 + 4].try_into().unwrap())
        });
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(K[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    wipe(&mut msg);
    let mut out = [0u8; 16];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_le_bytes());
    }
    out
}

fn wipe(buf: &mut [u8]) {
    buf.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_rfc1321_vectors() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(hex::encode(md5(input.as_bytes())), want, "{input:?}");
        }
        // Lengths around the 55/56/64-byte padding boundaries, checked against OpenSSL.
        for len in 50..140 {
            let data = vec![b'x'; len];
            let want = openssl::hash::hash(openssl::hash::MessageDigest::md5(), &data).unwrap();
            assert_eq!(md5(&data)[..], want[..], "len {len}");
        }
    }

    #[test]
    fn known_postgres_values() {
        // pg_authid stores md5(password || user); for postgres/postgres the well-known
        // value is md53175bce1d3201d16594cebf9d7eb3f9d.
        assert_eq!(
            hex::encode(md5(b"postgrespostgres")),
            "3175bce1d3201d16594cebf9d7eb3f9d"
        );
        // Expected values computed independently with Python's hashlib.
        assert_eq!(
            md5_password_message("postgres", "postgres", [1, 2, 3, 4]),
            "md568be9ed08db75f318087ab337aaea044"
        );
        assert_eq!(
            md5_password_message("alice", "pässwörd", [0xde, 0xad, 0xbe, 0xef]),
            "md5f844ef79d5bdbe1ed21eaba5f0e4488a"
        );
    }
}
