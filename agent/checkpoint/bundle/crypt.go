package bundle

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"filippo.io/age"
)

// ageIntro starts every binary age file; it is how an encrypted archive is
// recognised.
const ageIntro = "age-encryption.org/v1\n"

// GenerateKey writes a new age X25519 identity to path, readable by its
// owner only, in the format age-keygen writes (so `age -d -i FILE` can
// also open an archive). It refuses to overwrite an existing file, which
// may be the only key to existing archives.
func GenerateKey(path string) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return fmt.Errorf("%w: generate key: %w", ErrKey, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("key file %s: %w: refusing to overwrite a key that may protect existing archives; choose another path", path, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrKey, path, err)
	}
	_, err = fmt.Fprintf(f, "# created: %s\n# public key: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("%w: write %s: %w", ErrKey, path, err)
	}
	return nil
}

// readIdentities parses the identities in an age key file.
func readIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrKey, path, err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		// age's parse errors never quote key material.
		return nil, fmt.Errorf("%w %s: %w: it must hold an age identity (AGE-SECRET-KEY-1...), as `godwit checkpoint keygen` or age-keygen writes", ErrKey, path, err)
	}
	return ids, nil
}

// recipients returns who an archive encrypted with the key file is for: the
// public halves of its identities, so that the same file decrypts it.
func recipients(path string) ([]age.Recipient, error) {
	ids, err := readIdentities(path)
	if err != nil {
		return nil, err
	}
	rs := make([]age.Recipient, 0, len(ids))
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			rs = append(rs, id.Recipient())
		case *age.HybridIdentity:
			rs = append(rs, id.Recipient())
		default:
			return nil, fmt.Errorf("%w %s: unsupported identity type %T", ErrKey, path, id)
		}
	}
	return rs, nil
}

// encrypt wraps w so that what is written is encrypted to the key file's
// identities. Close finishes the age stream; it does not close w.
func encrypt(w io.Writer, keyFile string) (io.WriteCloser, error) {
	rs, err := recipients(keyFile)
	if err != nil {
		return nil, err
	}
	ew, err := age.Encrypt(w, rs...)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypt with %s: %w", ErrKey, keyFile, err)
	}
	return ew, nil
}

// decrypt opens an age stream with the key file's identities. A wrong key
// and a tampered header are told apart, since only the first is the
// operator's mistake.
func decrypt(r io.Reader, keyFile string) (io.Reader, error) {
	ids, err := readIdentities(keyFile)
	if err != nil {
		return nil, err
	}
	dr, err := age.Decrypt(r, ids...)
	var noMatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &noMatch):
		return nil, archiveError("", ErrDecrypt,
			"the key in %s does not open this archive (it was encrypted for another key): pass the key file it was exported with", keyFile)
	case err != nil:
		return nil, archiveError("", fmt.Errorf("%w: %w", ErrDecrypt, err),
			"the encryption header is corrupt or was tampered with (%v); %s", err, adviceArchive)
	}
	return dr, nil
}

// checkEncryption refuses an encrypted archive without a key, and a
// plaintext one with a key: only encryption authenticates an archive, so a
// plaintext file swapped in for an encrypted one must not pass unnoticed.
func checkEncryption(encrypted bool, keyFile string) error {
	switch {
	case encrypted && keyFile == "":
		return archiveError("", ErrEncrypted, "this archive is encrypted: pass --decrypt-key FILE")
	case !encrypted && keyFile != "":
		return archiveError("", ErrDecrypt,
			"this archive is not encrypted, but a decryption key was given; an unencrypted archive is not authenticated, so it is refused: check that this is the file you exported, or import it without --decrypt-key")
	}
	return nil
}

// Encrypt wraps w so that what is written to it is encrypted to the
// identities in keyFile, as Export does with EncryptKeyFile. It is for a
// client that encrypts an archive an agent streams to it, so that the key
// never leaves the client. Close finishes the encryption; it does not
// close w.
func Encrypt(w io.Writer, keyFile string) (io.WriteCloser, error) {
	return encrypt(w, keyFile)
}

// Decrypt opens the encrypted archive r with keyFile, as Import does with
// DecryptKeyFile, and returns its plaintext (a compressed or plain tar)
// for a client that sends it on. A plaintext r, a wrong key or a tampered
// header is refused at once (a *FileError matching ErrDecrypt); tampering
// further on fails the read that reaches it.
func Decrypt(r io.Reader, keyFile string) (io.Reader, error) {
	br := bufio.NewReaderSize(r, copyBufferSize)
	head, err := br.Peek(len(ageIntro))
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read checkpoint archive: %w", err)
	}
	if err := checkEncryption(string(head) == ageIntro, keyFile); err != nil {
		return nil, err
	}
	return decrypt(br, keyFile)
}
