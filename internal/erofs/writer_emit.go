package erofs

import (
	"bufio"
	"fmt"
)

// emitter writes the planned image sequentially, tracking the offset so that
// every gap is filled with zeros and every planned offset is checked.
type emitter struct {
	w   *bufio.Writer
	pos uint64
	buf [extendedInodeSize]byte
}

var zeroBlock [BlockSize]byte

func (e *emitter) write(p []byte) {
	e.w.Write(p) // errors surface at Flush
	e.pos += uint64(len(p))
}

func (e *emitter) writeString(s string) {
	e.w.WriteString(s)
	e.pos += uint64(len(s))
}

func (e *emitter) padTo(off uint64) error {
	if off < e.pos {
		return fmt.Errorf("internal error: image layout overlaps at offset %d (now at %d)", off, e.pos)
	}
	for e.pos < off {
		n := min(off-e.pos, BlockSize)
		e.write(zeroBlock[:n])
	}
	return nil
}

func (b *builder) emit(w *bufio.Writer) error {
	e := &emitter{w: w}
	e.write(b.header())
	if err := e.padTo(SuperblockOffset); err != nil {
		return err
	}
	e.write(b.superblock())
	for _, ino := range b.inodes {
		if err := e.padTo(ino.nid * inodeSlotSize); err != nil {
			return err
		}
		b.emitInode(e, ino)
	}
	if err := e.padTo(b.inodesEnd); err != nil {
		return err
	}
	for _, x := range b.shared {
		emitXattrEntry(e, x)
	}
	if err := e.padTo(b.dataStart); err != nil {
		return err
	}
	for _, ino := range b.inodes {
		if ino.nBlocks == 0 {
			continue
		}
		if err := e.padTo(ino.blkaddr * BlockSize); err != nil {
			return err
		}
		b.emitBlocks(e, ino)
	}
	return e.padTo((b.dataStart/BlockSize + b.dataBlocks) * BlockSize)
}

func (b *builder) header() []byte {
	h := make([]byte, composefsHeaderSize)
	le.PutUint32(h[hdrMagic:], ComposefsMagic)
	le.PutUint32(h[hdrVersion:], composefsHeaderVersion)
	if b.hasACL {
		le.PutUint32(h[hdrFlags:], headerFlagHasACL)
	}
	le.PutUint32(h[hdrComposefsVersion:], uint32(b.version))
	return h
}

func (b *builder) superblock() []byte {
	sb := make([]byte, superblockSize)
	le.PutUint32(sb[sbMagic:], ErofsMagic)
	le.PutUint32(sb[sbFeatureCompat:], featureCompatMtime|featureCompatXattrFilter)
	sb[sbBlkszbits] = blockSizeBits
	le.PutUint16(sb[sbRootNid:], uint16(b.inodes[0].nid))
	le.PutUint64(sb[sbInos:], uint64(len(b.inodes)))
	le.PutUint64(sb[sbBuildTime:], uint64(b.minTime.Sec))
	le.PutUint32(sb[sbBuildTimeNsec:], b.minTime.Nsec)
	le.PutUint32(sb[sbBlocks:], uint32(b.dataStart/BlockSize+b.dataBlocks))
	le.PutUint32(sb[sbXattrBlkaddr:], uint32(b.inodesEnd/BlockSize))
	return sb
}

func (b *builder) emitInode(e *emitter, ino *inode) {
	typ := ino.mode & ModeTypeMask
	var iu uint32
	switch {
	case typ == ModeChr || typ == ModeBlk:
		iu = ino.rdev
	case ino.layout == layoutChunkBased:
		// Upstream stores the block address first and then the chunk
		// format over its low half; keep that for identical bytes.
		iu = uint32(ino.blkaddr)&0xFFFF0000 | uint32(ino.chunkBits-blockSizeBits)
	case ino.nBlocks > 0:
		iu = uint32(ino.blkaddr)
	}
	iSize := ino.size
	if typ != ModeDir && typ != ModeReg && typ != ModeSymlink {
		iSize = 0
	}
	var icount uint16
	if ino.xattrSize > 0 {
		icount = uint16((ino.xattrSize-xattrIbodyHeaderSize)/4 + 1)
	}
	buf := e.buf[:]
	clear(buf)
	var ver uint16 = inodeVersionCompact
	if ino.extended {
		ver = inodeVersionExtended
	}
	le.PutUint16(buf[inoFormat:], ino.layout<<1|ver)
	le.PutUint16(buf[inoXattrIcount:], icount)
	le.PutUint16(buf[inoMode:], uint16(ino.mode))
	le.PutUint32(buf[inoU:], iu)
	le.PutUint32(buf[inoIno:], ino.index)
	if ino.extended {
		le.PutUint64(buf[einoSize:], iSize)
		le.PutUint32(buf[einoUID:], ino.uid)
		le.PutUint32(buf[einoGID:], ino.gid)
		le.PutUint64(buf[einoMtime:], uint64(ino.mtime.Sec))
		le.PutUint32(buf[einoMtimeNsec:], ino.mtime.Nsec)
		le.PutUint32(buf[einoNlink:], ino.nlink)
		e.write(buf[:extendedInodeSize])
	} else {
		le.PutUint16(buf[cinoNlink:], uint16(ino.nlink))
		le.PutUint32(buf[cinoSize:], uint32(iSize))
		le.PutUint16(buf[cinoUID:], uint16(ino.uid))
		le.PutUint16(buf[cinoGID:], uint16(ino.gid))
		e.write(buf[:compactInodeSize])
	}
	if ino.xattrSize > 0 {
		b.emitXattrBody(e, ino)
	}
	if ino.tail > 0 {
		b.emitTail(e, ino)
	}
}

func (b *builder) emitXattrBody(e *emitter, ino *inode) {
	var filter uint32
	for _, x := range ino.xattrs {
		idx, suffix := xattrPrefix(x.Key)
		filter |= 1 << (xxh32([]byte(suffix), xattrFilterSeed+uint32(idx)) & 31)
	}
	var hdr [xattrIbodyHeaderSize]byte
	le.PutUint32(hdr[0:], ^filter)
	hdr[4] = uint8(ino.nShared)
	e.write(hdr[:])
	var id [4]byte
	base := b.inodesEnd % BlockSize
	for _, xid := range ino.xids[:ino.nShared] {
		le.PutUint32(id[:], uint32((base+b.sharedOffset[xid])/4))
		e.write(id[:])
	}
	for _, x := range ino.xattrs[ino.nShared:] {
		emitXattrEntry(e, x)
	}
}

func emitXattrEntry(e *emitter, x Xattr) {
	idx, suffix := xattrPrefix(x.Key)
	var hdr [xattrEntryHeaderSize]byte
	hdr[0] = uint8(len(suffix))
	hdr[1] = idx
	le.PutUint16(hdr[2:], uint16(len(x.Value)))
	e.write(hdr[:])
	e.writeString(suffix)
	e.writeString(x.Value)
	n := xattrEntryHeaderSize + len(suffix) + len(x.Value)
	e.write(zeroBlock[:int(roundUp(uint64(n), 4))-n])
}

func (b *builder) emitTail(e *emitter, ino *inode) {
	switch ino.mode & ModeTypeMask {
	case ModeDir:
		start := ino.dirChunks[len(ino.dirChunks)-1]
		b.emitDirents(e, ino.dirents[start:])
	case ModeSymlink:
		e.writeString(ino.src.Payload)
	case ModeReg:
		if ino.layout == layoutChunkBased {
			emitNullChunks(e, ino.chunkCount)
		} else {
			e.write(ino.src.Content[ino.nBlocks*BlockSize:])
		}
	}
}

func emitNullChunks(e *emitter, n uint64) {
	var addr [chunkEntrySize]byte
	le.PutUint32(addr[:], chunkNullAddr)
	for range n {
		e.write(addr[:])
	}
}

func (b *builder) emitBlocks(e *emitter, ino *inode) {
	start := e.pos
	switch ino.mode & ModeTypeMask {
	case ModeDir:
		for i := uint64(0); i < ino.nBlocks; i++ {
			first := ino.dirChunks[i]
			end := len(ino.dirents)
			if int(i)+1 < len(ino.dirChunks) {
				end = ino.dirChunks[i+1]
			}
			b.emitDirents(e, ino.dirents[first:end])
			e.padTo(start + (i+1)*BlockSize)
		}
	case ModeSymlink:
		e.writeString(ino.src.Payload)
	case ModeReg:
		if ino.layout == layoutChunkBased {
			// Upstream writes a whole block of null addresses when
			// the chunk array did not fit inline.
			emitNullChunks(e, BlockSize/chunkEntrySize)
		} else {
			c := ino.src.Content
			e.write(c[:min(uint64(len(c)), ino.nBlocks*BlockSize)])
		}
	}
	e.padTo(start + ino.nBlocks*BlockSize)
}

func (b *builder) emitDirents(e *emitter, ents []dirent) {
	var rec [direntSize]byte
	nameOff := uint64(len(ents) * direntSize)
	for _, d := range ents {
		t := d.target
		le.PutUint64(rec[0:], t.nid)
		le.PutUint16(rec[8:], uint16(nameOff))
		rec[10] = fileTypeOf(t.mode)
		rec[11] = 0
		e.write(rec[:])
		nameOff += uint64(len(d.name))
	}
	for _, d := range ents {
		e.writeString(d.name)
	}
}
