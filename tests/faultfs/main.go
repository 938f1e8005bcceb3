// faultfs: a loopback FUSE file system that fails I/O on demand, for the storage-error
// tests (tests/e2e/storage_errors.rs). The broker's data dir is mounted through it, so the
// broker's own reads, writes and syncs get a real EIO from the kernel, for one partition's
// files only: this machine has no device-mapper to fail a device with.
//
// Usage: faultfs <backing dir> <mount point>
//
// Prints "mounted" once the mount serves, then reads commands on stdin, one per line, and
// answers each with "ok":
//
//	fail <prefix>   from now on every read, write, fsync, fallocate and truncate of a file
//	                whose path (relative to the mount point) starts with <prefix>, and every
//	                file opened or created there, fails with EIO (in addition to the
//	                prefixes failing already)
//	fail-io <prefix>  the same, except that files there still open: the first read or
//	                write fails instead (as on a disk whose metadata is cached)
//	heal            no more failures
//
// Not failed: directory operations (mkdir, rename, unlink, a directory's fsync) and a
// truncate by path rather than through an open file.
//
// Unmounts on EOF of stdin, SIGTERM or SIGINT. Needs root (it mounts with mount(2)).
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// A prefix whose I/O fails, and whether opening and creating files there fails too.
type failure struct {
	prefix string
	opens  bool
}

// failing holds the prefixes whose I/O fails.
var (
	failingMu sync.Mutex
	failing   []failure
)

// reported names the paths whose first injected failure was logged.
var reported sync.Map

func fails(op, path string) bool {
	failingMu.Lock()
	hit := false
	for _, f := range failing {
		opening := op == "open" || op == "create"
		hit = hit || (strings.HasPrefix(path, f.prefix) && (f.opens || !opening))
	}
	failingMu.Unlock()
	if !hit {
		return false
	}
	if _, seen := reported.LoadOrStore(op+" "+path, true); !seen {
		fmt.Fprintf(os.Stderr, "faultfs: EIO for %s of %s\n", op, path)
	}
	return true
}

// node is a loopback node whose files fail on demand.
type node struct {
	fs.LoopbackNode
}

func (n *node) relative() string {
	return n.Path(n.Root())
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	path := n.relative()
	if fails("open", path) {
		return nil, 0, syscall.EIO
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	// Keep the page cache on open (FUSE drops a file's cached pages on every open without
	// it): what is cached stays readable, as on a real device, and a test opening the file
	// to evict some pages evicts only those.
	return &file{LoopbackFile: fh.(*fs.LoopbackFile), path: path}, fuseFlags | fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	path := strings.TrimPrefix(n.relative()+"/"+name, "/")
	if fails("create", path) {
		return nil, nil, 0, syscall.EIO
	}
	inode, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return inode, &file{LoopbackFile: fh.(*fs.LoopbackFile), path: path}, fuseFlags, 0
}

// file forwards to the loopback file unless its path fails.
type file struct {
	*fs.LoopbackFile
	path string
}

// PassthroughFd: never hand the kernel the backing file (FUSE passthrough would bypass
// this process, and with it the failures).
func (f *file) PassthroughFd() (int, bool) { return -1, false }

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if fails("read", f.path) {
		return nil, syscall.EIO
	}
	return f.LoopbackFile.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if fails("write", f.path) {
		return 0, syscall.EIO
	}
	return f.LoopbackFile.Write(ctx, data, off)
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if fails("write", f.path) {
		return 0, syscall.EIO
	}
	return f.LoopbackFile.Writev(ctx, data, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if fails("fsync", f.path) {
		return syscall.EIO
	}
	return f.LoopbackFile.Fsync(ctx, flags)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if fails("fallocate", f.path) {
		return syscall.EIO
	}
	return f.LoopbackFile.Allocate(ctx, off, size, mode)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, truncates := in.GetSize(); truncates && fails("truncate", f.path) {
		return syscall.EIO
	}
	return f.LoopbackFile.Setattr(ctx, in, out)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: faultfs <backing dir> <mount point>")
		os.Exit(2)
	}
	backing, mountpoint := os.Args[1], os.Args[2]
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		fmt.Fprintf(os.Stderr, "faultfs: %s: %v\n", backing, err)
		os.Exit(1)
	}
	root := &fs.LoopbackRoot{
		Path: backing,
		Dev:  uint64(st.Dev),
		NewNode: func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
			return &node{fs.LoopbackNode{RootData: r}}
		},
	}
	root.RootNode = root.NewNode(root, nil, "", &st)
	// Short caches: the test's checks of the backing dir and the broker agree at once.
	second := time.Second
	server, err := fs.Mount(mountpoint, root.RootNode, &fs.Options{
		EntryTimeout: &second,
		AttrTimeout:  &second,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			FsName:            "faultfs",
			Name:              "faultfs",
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "faultfs: mount %s: %v\n", mountpoint, err)
		os.Exit(1)
	}
	unmount := func() {
		for i := 0; i < 50; i++ {
			if server.Unmount() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Still busy (a process holds files in it): detach it, as umount -l.
		_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		unmount()
		os.Exit(0)
	}()
	fmt.Println("mounted")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		words := strings.Fields(in.Text())
		switch {
		case len(words) == 2 && (words[0] == "fail" || words[0] == "fail-io"):
			failingMu.Lock()
			failing = append(failing, failure{prefix: words[1], opens: words[0] == "fail"})
			failingMu.Unlock()
		case len(words) == 1 && words[0] == "heal":
			failingMu.Lock()
			failing = nil
			failingMu.Unlock()
		default:
			fmt.Printf("error: unknown command %q\n", in.Text())
			continue
		}
		fmt.Println("ok")
	}
	unmount()
}
