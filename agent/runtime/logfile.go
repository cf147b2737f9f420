package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The container log lives in the state directory as container.log, with
// rotated files container.log.1 (newest) to container.log.<LogMaxFiles>
// (oldest). Each line is "<RFC3339Nano time> <stdout|stderr> <text>".
const (
	LogFileName = "container.log"

	// DefaultLogMaxBytes and DefaultLogMaxFiles apply when a ShimConfig
	// leaves them zero: at most 10 MiB per file and three rotated files.
	DefaultLogMaxBytes = 10 << 20
	DefaultLogMaxFiles = 3

	StreamStdout = "stdout"
	StreamStderr = "stderr"

	// maxLogLineBytes splits longer output lines into several log lines,
	// bounding the shim's buffers (Docker splits at the same size).
	maxLogLineBytes = 16 << 10
	// logFollowInterval is how often a following reader looks for new
	// lines, rotation and the container's exit.
	logFollowInterval = 100 * time.Millisecond
	// logReadChunk is the read size of ReadLogs.
	logReadChunk = 32 << 10
)

// rotatingLog appends timestamped lines to the container log and rotates it
// by size. Each line is one write(2), so a reader never sees lines of the
// two streams interleaved.
type rotatingLog struct {
	mu       sync.Mutex
	dir      string
	maxBytes int64
	maxFiles int
	f        *os.File
	size     int64
	buf      []byte
}

func openRotatingLog(dir string, maxBytes int64, maxFiles int) (*rotatingLog, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultLogMaxBytes
	}
	if maxFiles <= 0 {
		maxFiles = DefaultLogMaxFiles
	}
	l := &rotatingLog{dir: dir, maxBytes: maxBytes, maxFiles: maxFiles}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *rotatingLog) path(n int) string {
	p := filepath.Join(l.dir, LogFileName)
	if n > 0 {
		p += "." + strconv.Itoa(n)
	}
	return p
}

func (l *rotatingLog) open() error {
	f, err := os.OpenFile(l.path(0), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open container log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open container log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// writeLine appends one line for stream; text excludes the newline.
func (l *rotatingLog) writeLine(stream string, text []byte, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = now.UTC().AppendFormat(l.buf[:0], time.RFC3339Nano)
	l.buf = append(l.buf, ' ')
	l.buf = append(l.buf, stream...)
	l.buf = append(l.buf, ' ')
	l.buf = append(l.buf, text...)
	l.buf = append(l.buf, '\n')
	if l.size > 0 && l.size+int64(len(l.buf)) > l.maxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(l.buf)
	l.size += int64(n)
	return err
}

// rotate shifts container.log.N to .N+1, dropping the oldest, and starts an
// empty container.log.
func (l *rotatingLog) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("rotate container log: %w", err)
	}
	if err := os.Remove(l.path(l.maxFiles)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotate container log: %w", err)
	}
	for n := l.maxFiles - 1; n >= 0; n-- {
		if err := os.Rename(l.path(n), l.path(n+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate container log: %w", err)
		}
	}
	return l.open()
}

func (l *rotatingLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// copyStream writes every line read from r to the log until r ends. A line
// longer than maxLogLineBytes is split. Write errors (a full disk) are
// reported once through onErr and the pipe is still drained, so the
// container never blocks on a full pipe.
func copyStream(log *rotatingLog, stream string, r io.Reader, onErr func(error)) {
	br := bufio.NewReaderSize(r, maxLogLineBytes)
	reported := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if werr := log.writeLine(stream, bytes.TrimSuffix(line, []byte{'\n'}), time.Now()); werr != nil && !reported {
				reported = true
				onErr(werr)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return
		}
	}
}

// ReadLogs writes the text of the container's log lines to w: the rotated
// files oldest first, then the current file. With follow it keeps reading
// new lines, across rotations, until ctx ends (it then returns ctx.Err())
// or the container has exited (or its shim is gone) and the log is
// drained. A state directory without a log has no lines.
func ReadLogs(ctx context.Context, stateDir string, follow bool, w io.Writer) error {
	lr := &logReader{dir: stateDir, w: w}
	return lr.run(ctx, follow)
}

type logReader struct {
	dir     string
	w       io.Writer
	buf     []byte
	pending []byte
	out     []byte
}

func (lr *logReader) path(n int) string {
	p := filepath.Join(lr.dir, LogFileName)
	if n > 0 {
		p += "." + strconv.Itoa(n)
	}
	return p
}

// rotatedCount returns the highest N for which container.log.N exists.
func rotatedCount(dir string) int {
	n := 0
	for {
		if _, err := os.Lstat(filepath.Join(dir, LogFileName+"."+strconv.Itoa(n+1))); err != nil {
			return n
		}
		n++
	}
}

func (lr *logReader) run(ctx context.Context, follow bool) error {
	cur, curIno, err := lr.openCurrent(ctx, follow)
	if err != nil || cur == nil {
		return err
	}
	defer func() { cur.Close() }()

	// Older files first; skip the one we hold open, in case the writer
	// rotated it between our open and this listing.
	for n := rotatedCount(lr.dir); n >= 1; n-- {
		if err := lr.copyFileUnless(lr.path(n), curIno); err != nil {
			return err
		}
	}

	finishing := false
	for {
		if err := lr.drain(cur); err != nil {
			return err
		}
		if !follow {
			return lr.flushPending()
		}
		ino, err := inode(lr.path(0))
		if err == nil && ino != curIno {
			// Rotated: what we hold is now container.log.k; read it to its
			// end, then the files newer than it, then the new current.
			if err := lr.drain(cur); err != nil {
				return err
			}
			if err := lr.flushPending(); err != nil {
				return err
			}
			next, nextIno, err := lr.openCurrent(ctx, follow)
			if err != nil || next == nil {
				return err
			}
			if err := lr.copyNewerThan(curIno, nextIno); err != nil {
				next.Close()
				return err
			}
			cur.Close()
			cur, curIno = next, nextIno
			continue
		}
		if finishing {
			return lr.flushPending()
		}
		if lr.finished() {
			// One more pass reads whatever was written before the exit
			// was recorded.
			finishing = true
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(logFollowInterval):
		}
	}
}

// finished reports whether no more lines can come: the exit status is
// recorded (the shim writes it after the log is complete) or the shim is
// gone.
func (lr *logReader) finished() bool {
	if _, ok, _ := ReadExit(lr.dir); ok {
		return true
	}
	_, alive := ShimAlive(lr.dir)
	return !alive
}

// openCurrent opens container.log; following, it waits for the file to
// appear unless the container is finished. It returns a nil file when
// there is nothing to read.
func (lr *logReader) openCurrent(ctx context.Context, follow bool) (*os.File, uint64, error) {
	for {
		f, err := os.Open(lr.path(0))
		if err == nil {
			st, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, 0, fmt.Errorf("read container log: %w", err)
			}
			return f, st.Sys().(*syscall.Stat_t).Ino, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("read container log: %w", err)
		}
		if !follow || lr.finished() {
			return nil, 0, nil
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(logFollowInterval):
		}
	}
}

// copyNewerThan copies the rotated files newer than the one with inode ino
// (all of them when it was already dropped), oldest first, except the file
// with inode next, which the caller holds open as the current file.
func (lr *logReader) copyNewerThan(ino, next uint64) error {
	newest := rotatedCount(lr.dir)
	for n := 1; n <= newest; n++ {
		if i, err := inode(lr.path(n)); err == nil && i == ino {
			newest = n - 1
			break
		}
	}
	for n := newest; n >= 1; n-- {
		if err := lr.copyFileUnless(lr.path(n), next); err != nil {
			return err
		}
	}
	return nil
}

func (lr *logReader) copyFileUnless(path string, skipIno uint64) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // dropped by rotation meanwhile
	}
	if err != nil {
		return fmt.Errorf("read container log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read container log: %w", err)
	}
	if st.Sys().(*syscall.Stat_t).Ino == skipIno {
		return nil
	}
	if err := lr.drain(f); err != nil {
		return err
	}
	return lr.flushPending()
}

// drain reads f to its current end, writing each complete line's text and
// keeping a trailing partial line for the next read.
func (lr *logReader) drain(f *os.File) error {
	if lr.buf == nil {
		lr.buf = make([]byte, logReadChunk)
	}
	for {
		n, err := f.Read(lr.buf)
		if n > 0 {
			lr.pending = append(lr.pending, lr.buf[:n]...)
			if werr := lr.emitLines(); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read container log: %w", err)
		}
	}
}

func (lr *logReader) emitLines() error {
	for {
		i := bytes.IndexByte(lr.pending, '\n')
		if i < 0 {
			return nil
		}
		if err := lr.emit(lr.pending[:i]); err != nil {
			return err
		}
		lr.pending = lr.pending[i+1:]
	}
}

func (lr *logReader) flushPending() error {
	if len(lr.pending) == 0 {
		return nil
	}
	err := lr.emit(lr.pending)
	lr.pending = lr.pending[:0]
	return err
}

// emit writes the text part of one "<time> <stream> <text>" line.
func (lr *logReader) emit(line []byte) error {
	text := line
	if _, rest, ok := bytes.Cut(line, []byte{' '}); ok {
		if _, t, ok := bytes.Cut(rest, []byte{' '}); ok {
			text = t
		}
	}
	lr.out = append(append(lr.out[:0], text...), '\n')
	if _, err := lr.w.Write(lr.out); err != nil {
		return fmt.Errorf("write logs: %w", err)
	}
	return nil
}

func inode(path string) (uint64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Sys().(*syscall.Stat_t).Ino, nil
}
