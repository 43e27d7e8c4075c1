//! Reading the kernel's BTF type information (`/sys/kernel/btf/vmlinux`) to find where struct
//! members sit and what enumerators are worth, so that the offsets handed to the eBPF programs
//! come from the running kernel instead of being hard-coded.
//!
//! The format is described in the kernel's `Documentation/bpf/btf.rst`. Only little-endian
//! blobs are supported, and only the parts needed for member offsets and enum values are
//! interpreted; every other kind is merely stepped over.

use std::collections::HashMap;
use std::path::Path;

const HEADER_LEN: usize = 24;
const MAGIC: u16 = 0xEB9F;
/// Bounds typedef chains, array nesting and anonymous-member recursion, so that a malformed
/// (cyclic) blob yields an error instead of looping forever or overflowing the stack.
const MAX_DEPTH: usize = 64;

pub(crate) const INT: u32 = 1;
pub(crate) const PTR: u32 = 2;
const ARRAY: u32 = 3;
pub(crate) const STRUCT: u32 = 4;
pub(crate) const UNION: u32 = 5;
pub(crate) const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// A parsed BTF blob: the raw type and string sections plus indexes into them.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Byte offset in `types` of the record of type id `i + 1` (id 0 is void).
    offsets: Vec<u32>,
    /// Struct/union name -> (type id, has members).
    aggregates: HashMap<Vec<u8>, (u32, bool)>,
    /// Ids of every ENUM and ENUM64 type, so enumerator lookups skip the vast majority of types.
    enums: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a BTF blob: {0}")]
    Format(String),
    #[error("no struct or union named `{0}` in the kernel's BTF")]
    NoType(String),
    #[error("`{root}` has no member `{path}` in the kernel's BTF")]
    NoMember { root: String, path: String },
    #[error("no enumerator named `{0}` in the kernel's BTF")]
    NoEnumerator(String),
}

/// Where a member sits inside the root struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLoc {
    /// Offset in bits from the start of the root struct.
    pub bit_offset: u32,
    /// Width in bits: the bitfield width for a bitfield member, otherwise 8 * byte_size.
    pub bit_size: u32,
    /// Size in bytes of the member's type after resolving typedef/const/volatile/restrict/
    /// type_tag (for a bitfield: its base integer type's size); 8 for a pointer.
    pub byte_size: u32,
    /// True for a bitfield member.
    pub bitfield: bool,
}

/// The common `struct btf_type` prefix of one record; kind 0 stands for void (id 0).
#[derive(Clone, Copy, Default)]
struct Type {
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
    /// Offset in the type section of the kind-specific data following the prefix.
    body: usize,
}

/// A member found by name: offset relative to the aggregate searched, kind_flag bitfield
/// width (0 if none) and the member's type id.
type Found = (u32, u32, u32);

fn bad(msg: impl Into<String>) -> BtfError {
    BtfError::Format(msg.into())
}

fn read_u32(buf: &[u8], off: usize) -> Result<u32, BtfError> {
    off.checked_add(4)
        .and_then(|end| buf.get(off..end))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad(format!("truncated data at offset {off}")))
}

/// The NUL-terminated string at `off` in the string section, without the NUL.
fn str_at(strings: &[u8], off: u32) -> Result<&[u8], BtfError> {
    let tail = strings
        .get(off as usize..)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad(format!("string offset {off} out of range")))?;
    let s = tail.split(|&b| b == 0).next().unwrap_or_default();
    if s.len() == tail.len() {
        return Err(bad(format!("unterminated string at offset {off}")));
    }
    Ok(s)
}

fn add(a: u32, b: u32) -> Result<u32, BtfError> {
    a.checked_add(b)
        .ok_or_else(|| bad("member offset overflow"))
}

/// The section whose offset (relative to the header's end) and length are at `field` and
/// `field + 4` in the header.
fn section(data: &[u8], hdr_len: usize, field: usize, what: &str) -> Result<Vec<u8>, BtfError> {
    let (off, len) = (read_u32(data, field)?, read_u32(data, field + 4)?);
    let start = hdr_len.checked_add(off as usize);
    start
        .and_then(|s| data.get(s..s.checked_add(len as usize)?))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| bad(format!("{what} section out of bounds")))
}

/// Size of the kind-specific data following a record's prefix.
fn body_len(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
        INT | VAR | DECL_TAG => 4,
        ARRAY => 12,
        STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
        ENUM | FUNC_PROTO => 8 * vlen,
        _ => return Err(bad(format!("unknown type kind {kind}"))),
    })
}

impl Btf {
    /// Parse a little-endian BTF blob, indexing struct/union names and enum types.
    pub fn from_bytes(data: &[u8]) -> Result<Btf, BtfError> {
        let hdr: &[u8; HEADER_LEN] = data
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad("truncated header"))?;
        match u16::from_le_bytes([hdr[0], hdr[1]]) {
            MAGIC => {}
            m if m == MAGIC.swap_bytes() => return Err(bad("big-endian BTF is not supported")),
            m => return Err(bad(format!("bad magic {m:#06x}"))),
        }
        if hdr[2] != 1 {
            return Err(bad(format!("unsupported version {}", hdr[2])));
        }
        let hdr_len = read_u32(data, 4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(bad(format!("header length {hdr_len} too short")));
        }
        let types = section(data, hdr_len, 8, "type")?;
        let strings = section(data, hdr_len, 16, "string")?;

        let (mut offsets, mut aggregates, mut enums) = (Vec::new(), HashMap::new(), Vec::new());
        let mut pos = 0;
        while pos < types.len() {
            let name_off = read_u32(&types, pos)?;
            let info = read_u32(&types, pos + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let name = str_at(&strings, name_off)?;
            let end = pos + 12 + body_len(kind, vlen)?;
            if end > types.len() {
                return Err(bad(format!("truncated type record at offset {pos}")));
            }
            // Lossless: the type section is at most u32::MAX bytes long.
            offsets.push(pos as u32);
            let id = offsets.len() as u32;
            match kind {
                STRUCT | UNION if !name.is_empty() => {
                    // Prefer a definition with members over an earlier empty one.
                    let entry = aggregates.entry(name.to_vec()).or_insert((id, vlen > 0));
                    if !entry.1 && vlen > 0 {
                        *entry = (id, true);
                    }
                }
                ENUM | ENUM64 => enums.push(id),
                _ => {}
            }
            pos = end;
        }
        Ok(Btf {
            types,
            strings,
            offsets,
            aggregates,
            enums,
        })
    }

    /// Read and parse a BTF blob from a file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Btf::from_bytes(&data)
    }

    /// The running kernel's BTF (/sys/kernel/btf/vmlinux).
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// Resolve a dotted member path, e.g. `member("sock", "__sk_common.skc_num")`.
    ///
    /// Anonymous struct/union members are searched through transparently. Pointers are never
    /// followed: reaching through one would be a second memory read, not an offset.
    pub fn member(&self, root: &str, path: &str) -> Result<MemberLoc, BtfError> {
        let not_found = || BtfError::NoMember {
            root: root.into(),
            path: path.into(),
        };
        let mut agg = self.aggregate(root)?;
        let mut bit_offset = 0u32;
        let mut parts = path.split('.');
        let mut name = parts.next().unwrap_or_default();
        loop {
            let (off, bitfield_size, ty) = self.find_member(agg, name, 0)?.ok_or_else(not_found)?;
            bit_offset = add(bit_offset, off)?;
            let ty = self.resolve(self.ty(ty)?)?;
            match parts.next() {
                Some(next) if matches!(ty.kind, STRUCT | UNION) => (agg, name) = (ty, next),
                Some(_) => return Err(not_found()),
                None => return self.locate(bit_offset, bitfield_size, ty),
            }
        }
    }

    /// Type id of the kernel function `name` (a BTF FUNC), as `attach_btf_id` wants it.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.offsets.iter().enumerate().find_map(|(i, &pos)| {
            let info = read_u32(&self.types, pos as usize + 4).ok()?;
            let name_off = read_u32(&self.types, pos as usize).ok()?;
            ((info >> 24) & 0x1f == FUNC && self.name(name_off).ok()? == name.as_bytes())
                .then_some(i as u32 + 1)
        })
    }

    /// Size in bytes of the named struct/union.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.aggregate(name)?.size_or_type)
    }

    /// Value of a named enumerator, searching every ENUM and ENUM64 type. An unsigned ENUM64
    /// value above `i64::MAX` comes back wrapped to a negative number.
    pub fn enum_value(&self, enumerator: &str) -> Result<i64, BtfError> {
        for &id in &self.enums {
            let t = self.ty(id)?;
            let stride = if t.kind == ENUM64 { 12 } else { 8 };
            for at in (0..t.vlen).map(|i| t.body + stride * i) {
                if self.name(read_u32(&self.types, at)?)? != enumerator.as_bytes() {
                    continue;
                }
                let lo = read_u32(&self.types, at + 4)?;
                return Ok(match (t.kind, t.kind_flag) {
                    (ENUM, true) => i64::from(lo as i32),
                    (ENUM, false) => i64::from(lo),
                    _ => (u64::from(read_u32(&self.types, at + 8)?) << 32 | u64::from(lo)) as i64,
                });
            }
        }
        Err(BtfError::NoEnumerator(enumerator.into()))
    }

    fn name(&self, off: u32) -> Result<&[u8], BtfError> {
        str_at(&self.strings, off)
    }

    fn ty(&self, id: u32) -> Result<Type, BtfError> {
        if id == 0 {
            return Ok(Type::default());
        }
        let pos = *self
            .offsets
            .get(id as usize - 1)
            .ok_or_else(|| bad(format!("type id {id} out of range")))? as usize;
        let info = read_u32(&self.types, pos + 4)?;
        Ok(Type {
            kind: (info >> 24) & 0x1f,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type: read_u32(&self.types, pos + 8)?,
            body: pos + 12,
        })
    }

    fn aggregate(&self, name: &str) -> Result<Type, BtfError> {
        let &(id, _) = self
            .aggregates
            .get(name.as_bytes())
            .ok_or_else(|| BtfError::NoType(name.into()))?;
        self.ty(id)
    }

    /// Strip typedef/const/volatile/restrict/type_tag.
    fn resolve(&self, mut t: Type) -> Result<Type, BtfError> {
        for _ in 0..MAX_DEPTH {
            if !matches!(t.kind, TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG) {
                return Ok(t);
            }
            t = self.ty(t.size_or_type)?;
        }
        Err(bad("type modifier chain too long or cyclic"))
    }

    fn byte_size(&self, t: Type, depth: usize) -> Result<u32, BtfError> {
        let t = self.resolve(t)?;
        Ok(match t.kind {
            PTR => 8,
            INT | STRUCT | UNION | ENUM | ENUM64 | FLOAT | DATASEC => t.size_or_type,
            ARRAY if depth < MAX_DEPTH => {
                let elem = self.byte_size(self.ty(read_u32(&self.types, t.body)?)?, depth + 1)?;
                let nelems = read_u32(&self.types, t.body + 8)?;
                elem.checked_mul(nelems)
                    .ok_or_else(|| bad("array size overflow"))?
            }
            ARRAY => return Err(bad("arrays nested too deeply")),
            _ => 0, // void, forward declarations, functions: no size.
        })
    }

    /// Look `name` up among the members of `agg`, descending into anonymous structs/unions.
    fn find_member(&self, agg: Type, name: &str, depth: usize) -> Result<Option<Found>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(bad("anonymous members nested too deeply"));
        }
        for at in (0..agg.vlen).map(|i| agg.body + 12 * i) {
            let member_name = self.name(read_u32(&self.types, at)?)?;
            let ty = read_u32(&self.types, at + 4)?;
            let offset = read_u32(&self.types, at + 8)?;
            // With kind_flag the offset packs a bitfield width into its high byte.
            let (off, bitfield_size) = match agg.kind_flag {
                true => (offset & 0xff_ffff, offset >> 24),
                false => (offset, 0),
            };
            if !member_name.is_empty() {
                if member_name == name.as_bytes() {
                    return Ok(Some((off, bitfield_size, ty)));
                }
                continue;
            }
            let inner = self.resolve(self.ty(ty)?)?;
            if matches!(inner.kind, STRUCT | UNION) {
                if let Some((o, bf, t)) = self.find_member(inner, name, depth + 1)? {
                    return Ok(Some((add(o, off)?, bf, t)));
                }
            }
        }
        Ok(None)
    }

    fn locate(&self, bit_offset: u32, bitfield_size: u32, ty: Type) -> Result<MemberLoc, BtfError> {
        let byte_size = self.byte_size(ty, 0)?;
        let full = byte_size
            .checked_mul(8)
            .ok_or_else(|| bad("type size overflow"))?;
        let (shift, bits) = match ty.kind {
            _ if bitfield_size != 0 => (0, bitfield_size),
            // Without kind_flag a bitfield shows up as an INT narrower than, or shifted
            // within, its storage.
            INT => {
                let enc = read_u32(&self.types, ty.body)?;
                ((enc >> 16) & 0xff, enc & 0xff)
            }
            _ => (0, full),
        };
        Ok(MemberLoc {
            bit_offset: add(bit_offset, shift)?,
            bit_size: bits,
            byte_size,
            bitfield: bitfield_size != 0 || shift != 0 || bits != full,
        })
    }
}

/// Builds BTF blobs by hand, for tests here and in modules that resolve offsets.
#[cfg(test)]
pub(crate) mod blob {
    use super::MAGIC;
    pub(crate) use super::{ENUM, INT, PTR, STRUCT, UNION};

    /// kind_flag bit of a btf_type info word (bitfield offsets in members).
    pub(crate) const KFLAG: u32 = 1 << 31;

    /// Emits little-endian BTF blobs for the tests.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strs: Vec<u8>,
        n: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder {
                types: vec![],
                strs: vec![0],
                n: 0,
            }
        }
        pub(crate) fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend(name.as_bytes().iter().chain([&0]));
            off
        }
        /// `info` is the raw btf_type info word: kind << 24, kind_flag, vlen.
        pub(crate) fn ty(
            &mut self,
            info: u32,
            name: &str,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let head = [self.s(name), info, size_or_type];
            self.types
                .extend(head.iter().chain(extra).flat_map(|w| w.to_le_bytes()));
            self.n += 1;
            self.n
        }
        pub(crate) fn int(&mut self, name: &str, size: u32, bits: u32, shift: u32) -> u32 {
            self.ty(INT << 24, name, size, &[shift << 16 | bits])
        }
        pub(crate) fn aggr(
            &mut self,
            info: u32,
            name: &str,
            size: u32,
            m: &[(&str, u32, u32)],
        ) -> u32 {
            let extra: Vec<u32> = m.iter().flat_map(|&(n, t, o)| [self.s(n), t, o]).collect();
            self.ty(info << 24 | m.len() as u32, name, size, &extra)
        }
        pub(crate) fn build(&self) -> Vec<u8> {
            let (tl, sl) = (self.types.len() as u32, self.strs.len() as u32);
            let hdr = [u32::from(MAGIC) | 1 << 16, 24, 0, tl, tl, sl];
            let mut out: Vec<u8> = hdr.iter().flat_map(|w| w.to_le_bytes()).collect();
            out.extend(&self.types);
            out.extend(&self.strs);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::blob::{Builder, KFLAG};
    use super::*;

    fn fixture() -> Vec<u8> {
        let mut b = Builder::new();
        b.aggr(STRUCT, "root", 0, &[]); // An empty twin, as a forward declaration would be.
        let u8_ = b.int("unsigned char", 1, 8, 0);
        let u16_ = b.int("u16", 2, 16, 0);
        let u32_ = b.int("unsigned int", 4, 32, 0);
        let u64_ = b.int("u64", 8, 64, 0);
        let td = b.ty(TYPEDEF << 24, "__u32", u32_, &[]);
        let cst = b.ty(CONST << 24, "", td, &[]);
        let inner = b.aggr(STRUCT, "inner", 8, &[("c", u32_, 32)]);
        let mid = b.aggr(STRUCT, "mid", 16, &[("pad", u64_, 0), ("b", inner, 64)]);
        let ptr = b.ty(PTR << 24, "", mid, &[]);
        let anon_u = b.aggr(UNION, "", 4, &[("x", u16_, 0), ("y", cst, 0)]);
        let anon_s = b.aggr(STRUCT, "", 8, &[("pre", u32_, 0), ("", anon_u, 32)]);
        // struct bits { u8 x:4; u8 y:1; u16 z; }
        let bf = [
            ("x", u8_, 4 << 24),
            ("y", u8_, 1 << 24 | 4),
            ("z", u16_, 16),
        ];
        let bits = b.aggr(STRUCT | KFLAG >> 24, "bits", 4, &bf);
        let narrow = b.int("", 1, 3, 2);
        let arr = b.ty(ARRAY << 24, "", 0, &[u16_, u32_, 3]);
        let members = [
            ("first", u64_, 0),
            ("", anon_s, 64),
            ("a", mid, 128),
            ("p", ptr, 256),
            ("bits", bits, 320),
            ("legacy", narrow, 352),
            ("t", td, 384),
            ("k", cst, 416),
            ("arr", arr, 448),
        ];
        b.aggr(STRUCT, "root", 64, &members);
        let (neg, pos, high, big) = (b.s("NEG"), b.s("POS"), b.s("HIGH"), b.s("BIG"));
        b.ty(
            ENUM << 24 | KFLAG | 2,
            "signed_e",
            4,
            &[neg, -5i32 as u32, pos, 7],
        );
        b.ty(ENUM << 24 | 1, "", 4, &[high, 0xffff_fff0]);
        b.ty(ENUM64 << 24 | 1, "", 8, &[big, 2, 1]);
        b.build()
    }

    /// (bit_offset, bit_size, byte_size, bitfield) of `root.path` in the fixture.
    fn at(btf: &Btf, path: &str) -> (u32, u32, u32, bool) {
        let l = btf.member("root", path).unwrap();
        (l.bit_offset, l.bit_size, l.byte_size, l.bitfield)
    }

    fn is_format<T>(r: Result<T, BtfError>) -> bool {
        matches!(r, Err(BtfError::Format(_)))
    }

    #[test]
    fn resolves_members() {
        let btf = Btf::from_bytes(&fixture()).unwrap();
        assert_eq!(at(&btf, "first"), (0, 64, 8, false));
        // Inside an anonymous struct, then an anonymous union within it: offsets add up.
        assert_eq!(at(&btf, "pre"), (64, 32, 4, false));
        assert_eq!(at(&btf, "x"), (96, 16, 2, false));
        assert_eq!(at(&btf, "y"), (96, 32, 4, false));
        assert_eq!(at(&btf, "a"), (128, 128, 16, false));
        assert_eq!(at(&btf, "a.b.c"), (224, 32, 4, false));
        assert_eq!(at(&btf, "p"), (256, 64, 8, false));
        assert_eq!(at(&btf, "t"), (384, 32, 4, false));
        assert_eq!(at(&btf, "k"), (416, 32, 4, false));
        assert_eq!(at(&btf, "arr"), (448, 48, 6, false));
        // The empty twin declared first is skipped.
        assert_eq!(btf.struct_size("root").unwrap(), 64);
        assert_eq!(btf.struct_size("mid").unwrap(), 16);
    }

    #[test]
    fn resolves_bitfields() {
        let btf = Btf::from_bytes(&fixture()).unwrap();
        assert_eq!(at(&btf, "bits.x"), (320, 4, 1, true));
        assert_eq!(at(&btf, "bits.y"), (324, 1, 1, true));
        assert_eq!(at(&btf, "bits.z"), (336, 16, 2, false));
        // No kind_flag: 3 bits at bit 2 of the INT's storage.
        assert_eq!(at(&btf, "legacy"), (354, 3, 1, true));
    }

    #[test]
    fn reports_missing_things() {
        let btf = Btf::from_bytes(&fixture()).unwrap();
        let err = |p| btf.member("root", p).unwrap_err();
        assert!(matches!(err("p.b"), BtfError::NoMember { .. })); // Through a pointer.
        assert!(matches!(err("first.x"), BtfError::NoMember { .. }));
        assert!(matches!(err("a..b"), BtfError::NoMember { .. }));
        let e = err("a.zz");
        assert_eq!(
            e.to_string(),
            "`root` has no member `a.zz` in the kernel's BTF"
        );
        assert!(matches!(e, BtfError::NoMember { root, path } if root == "root" && path == "a.zz"));
        assert!(matches!(btf.member("nope", "x"), Err(BtfError::NoType(n)) if n == "nope"));
        assert!(matches!(btf.struct_size("nope"), Err(BtfError::NoType(_))));
        assert!(matches!(
            btf.enum_value("NOPE"),
            Err(BtfError::NoEnumerator(_))
        ));
    }

    #[test]
    fn reads_enum_values() {
        let btf = Btf::from_bytes(&fixture()).unwrap();
        assert_eq!(btf.enum_value("NEG").unwrap(), -5);
        assert_eq!(btf.enum_value("POS").unwrap(), 7);
        assert_eq!(btf.enum_value("HIGH").unwrap(), 0xffff_fff0);
        assert_eq!(btf.enum_value("BIG").unwrap(), 0x1_0000_0002);
    }

    #[test]
    fn rejects_malformed_blobs() {
        let blob = fixture();
        for cut in 0..blob.len() {
            assert!(is_format(Btf::from_bytes(&blob[..cut])), "cut at {cut}");
        }
        let mut bad_magic = blob.clone();
        bad_magic[0] = 0;
        assert!(is_format(Btf::from_bytes(&bad_magic)));
        let mut swapped = blob.clone();
        swapped.swap(0, 1);
        let e = Btf::from_bytes(&swapped).err().unwrap();
        assert!(matches!(e, BtfError::Format(m) if m.contains("big-endian")));
        let mut bad_kind = blob.clone();
        bad_kind[24 + 7] = 31; // The first record's kind byte.
        assert!(is_format(Btf::from_bytes(&bad_kind)));
    }

    #[test]
    fn rejects_out_of_range_strings() {
        let mut b = Builder::new();
        let int = b.int("int", 4, 32, 0);
        b.aggr(STRUCT, "s", 4, &[("m", int, 0)]);
        let blob = b.build();
        let mut type_name = blob.clone();
        type_name[24..28].copy_from_slice(&9999u32.to_le_bytes());
        assert!(is_format(Btf::from_bytes(&type_name)));
        // The struct's only member record starts 16 + 12 bytes into the type section.
        let mut member_name = blob.clone();
        member_name[24 + 28..24 + 32].copy_from_slice(&9999u32.to_le_bytes());
        let btf = Btf::from_bytes(&member_name).unwrap();
        assert!(is_format(btf.member("s", "m")));
    }

    #[test]
    fn survives_corrupted_blobs() {
        let blob = fixture();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            let mut data = blob.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = 24 + (seed as usize >> 8) % (data.len() - 24);
                data[i] = seed as u8;
            }
            if let Ok(btf) = Btf::from_bytes(&data) {
                for p in ["first", "x", "a.b.c", "bits.y", "legacy", "arr", "p.b"] {
                    let _ = btf.member("root", p);
                }
                let _ = (btf.struct_size("root"), btf.enum_value("BIG"));
            }
        }
    }

    #[test]
    fn reads_the_running_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            let why = format!("{} does not exist", path.display());
            return crate::testenv::missing("btf::reads_the_running_kernel", &why);
        }
        let start = std::time::Instant::now();
        let btf = Btf::from_sys_fs().unwrap();
        let parsed = start.elapsed();
        let m = |root, p| btf.member(root, p).unwrap();
        assert_eq!(m("sock", "__sk_common").bit_offset, 0);
        assert_eq!(m("sock", "__sk_common.skc_family").byte_size, 2);
        let num = m("sock_common", "skc_num");
        assert_eq!((num.byte_size, num.bit_offset), (2, 8 * 14));
        let reuse = m("sock", "__sk_common.skc_reuse");
        let reuseport = m("sock", "__sk_common.skc_reuseport");
        assert!(reuse.bitfield && reuse.bit_size == 4);
        assert!(reuseport.bitfield && reuseport.bit_size == 1);
        assert_eq!(reuseport.bit_offset, reuse.bit_offset + 4);
        assert_eq!(m("task_struct", "files").byte_size, 8);
        assert_eq!(m("net", "ns.inum").byte_size, 4);
        assert!(btf.struct_size("sock_common").unwrap() > 0);
        let facts = "sock.__sk_common.skc_reuse sock.__sk_common.skc_reuseport \
            sock.__sk_common.skc_ipv6only sock.sk_protocol sock.sk_type sock.sk_uid \
            inet_sock.inet_flags file.private_data file.f_inode inode.i_ino socket.sk \
            socket.file files_struct.fdt fdtable.fd fdtable.max_fds";
        for fact in facts.split_whitespace() {
            let (root, p) = fact.split_once('.').unwrap();
            eprintln!("{fact}: {:?}", btf.member(root, p));
        }
        let enums = "INET_FLAGS_FREEBIND INET_FLAGS_TRANSPARENT INET_FLAGS_BIND_ADDRESS_NO_PORT";
        for e in enums.split_whitespace() {
            eprintln!("{e}: {:?}", btf.enum_value(e));
        }
        eprintln!("parse {parsed:?}, parse + lookups {:?}", start.elapsed());
    }
}
