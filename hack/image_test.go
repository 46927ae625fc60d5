// Package hack_test checks the image build without a container engine: the Dockerfile's build stage
// runs hack/image-build.sh, and this test runs the same script on the same build context.
package hack_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/baregate/baregate/internal/testutil"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// dockerignore reads the patterns of .dockerignore (no negations: the file has none, and the test
// fails if one appears rather than mis-reading it).
func dockerignore(t *testing.T, root string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pats []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore has an exception %q this test does not understand", line)
		}
		pats = append(pats, strings.TrimPrefix(line, "/"))
	}
	return pats
}

// ignored matches a context-relative path as Docker does for these patterns: a pattern matches the
// path or any of its parent directories, and a leading **/ matches at any depth.
func ignored(pats []string, rel string) bool {
	parts := strings.Split(rel, "/")
	for _, p := range pats {
		for i := 1; i <= len(parts); i++ {
			prefix := strings.Join(parts[:i], "/")
			if ok, _ := filepath.Match(p, prefix); ok {
				return true
			}
			if rest, deep := strings.CutPrefix(p, "**/"); deep {
				if ok, _ := filepath.Match(rest, parts[i-1]); ok {
					return true
				}
			}
		}
	}
	return false
}

// buildContext copies what `docker build .` would send into a fresh directory.
func buildContext(t *testing.T, root string) string {
	t.Helper()
	pats := dockerignore(t, root)
	dst := t.TempDir()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if ignored(pats, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copying the build context: %v", err)
	}
	return dst
}

func TestDockerignorePatterns(t *testing.T) {
	pats := []string{".git", "charts", "**/testdata", "*.md", "*.test"}
	for rel, want := range map[string]bool{
		".git/config":                  true,
		"charts/baregate/Chart.yaml":   true,
		"nodeport/testdata/x.golden":   true,
		"ui/web/testdata/a/b.json":     true,
		"README.md":                    true,
		"ingress.test":                 true,
		"docs/x/README.md":             false, // *.md is anchored at the context root, as in Docker
		"cmd/baregate/main.go":         false,
		"ui/web/index.html":            false,
		"go.mod":                       false,
		"internal/cluster/snapshot.go": false,
	} {
		if got := ignored(pats, rel); got != want {
			t.Errorf("ignored(%q) = %v, want %v", rel, got, want)
		}
	}
}

// TestDockerfileRunsTheBuildScript ties the Dockerfile to what TestImageBuildScript checks.
func TestDockerfileRunsTheBuildScript(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{
		"AS build",
		`RUN hack/image-build.sh /out/baregate "${VERSION}"`,
		"COPY --from=build /out/baregate /usr/local/bin/baregate",
		// What the binary runs at run time: knftables execs nft, nodeport execs conntrack.
		"nftables=", "conntrack=",
		"org.opencontainers.image.source=", "org.opencontainers.image.version=", "org.opencontainers.image.revision=",
		"USER 65532:65532",
		`ENTRYPOINT ["/usr/local/bin/baregate"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
	if strings.Count(df, "\nFROM ") != 2 {
		t.Errorf("want a two-stage Dockerfile (build, runtime)")
	}
}

// TestImageBuildScript runs the build stage's script on a copy of the Docker build context, and checks
// that the binary is static, reproducible (the same bytes from two directories), free of the build path
// and stamped with the version.
func TestImageBuildScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary twice")
	}
	testutil.RequireTool(t, "go", "file")
	root := repoRoot()
	const version = "v0.0.0-imagetest"
	build := func(dir string) (string, []byte) {
		out := filepath.Join(t.TempDir(), "baregate")
		cmd := exec.Command("sh", "hack/image-build.sh", out, version)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("hack/image-build.sh in %s: %v\n%s", dir, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return out, b
	}
	// Two copies of one snapshot of the context (the checkout is shared with people editing it), built
	// in different directories, must give the same bytes.
	ctxDir := buildContext(t, root)
	otherDir := buildContext(t, ctxDir)
	bin, fromContext := build(ctxDir)
	_, fromOther := build(otherDir)
	if !bytes.Equal(fromContext, fromOther) {
		t.Errorf("the build is not reproducible: the same sources built in %s and %s differ", ctxDir, otherDir)
	}
	for _, dir := range []string{ctxDir, otherDir, root} {
		if bytes.Contains(fromContext, []byte(dir)) {
			t.Errorf("the binary contains its build directory %s (-trimpath missing?)", dir)
		}
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	if out, err := exec.Command("file", bin).CombinedOutput(); err != nil || !strings.Contains(string(out), "statically linked") {
		t.Errorf("file says %q (%v); want statically linked", out, err)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), version) {
		t.Errorf("baregate --version printed %q (%v); want %s", out, err, version)
	}
}
