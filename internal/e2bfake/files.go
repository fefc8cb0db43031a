package e2bfake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	filesystempb "github.com/tproxy/tproxy/internal/e2benvd/filesystem"
	"github.com/tproxy/tproxy/internal/e2benvd/filesystem/filesystempbconnect"
)

// sandboxPath makes p absolute as envd does: relative to the user's home.
func sandboxPath(p string) string {
	if !path.IsAbs(p) {
		p = path.Join("/home/user", p)
	}
	return path.Clean(p)
}

// readOnly reports whether p is under a kernel file system that envd
// cannot write to.
func readOnly(p string) bool {
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// textError answers as envd's file API does: a text/plain body.
func textError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	sb := sandboxOf(r.Context())
	p := r.URL.Query().Get("path")
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var src io.Reader
	switch ct {
	case "multipart/form-data":
		mr, err := r.MultipartReader()
		if err != nil {
			textError(w, http.StatusBadRequest, err.Error())
			return
		}
		for src == nil {
			part, err := mr.NextPart()
			if err != nil {
				textError(w, http.StatusBadRequest, "no file part in the form")
				return
			}
			if part.FormName() == "file" {
				if p == "" {
					p = part.FileName()
				}
				src = part
			}
		}
	case "application/octet-stream":
		src = r.Body
	default:
		textError(w, http.StatusBadRequest, "unsupported Content-Type "+ct)
		return
	}
	if p == "" {
		textError(w, http.StatusBadRequest, "path is required")
		return
	}
	abs := sandboxPath(p)
	if readOnly(abs) {
		textError(w, http.StatusInternalServerError, fmt.Sprintf("error ensuring directories: mkdir %s: operation not permitted", path.Dir(abs)))
		return
	}
	hp := sb.filePath(p)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		textError(w, http.StatusInternalServerError, "error ensuring directories: "+err.Error())
		return
	}
	f, err := os.OpenFile(hp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err == nil {
		_, err = io.Copy(f, src)
		err = errors.Join(err, f.Close(), os.Chmod(hp, 0o644))
	}
	if err != nil {
		textError(w, http.StatusInternalServerError, "error writing file: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, []map[string]string{{"name": path.Base(abs), "path": abs, "type": "file"}})
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	sb := sandboxOf(r.Context())
	p := r.URL.Query().Get("path")
	f, err := os.Open(sb.filePath(p))
	if err != nil {
		textError(w, http.StatusNotFound, fmt.Sprintf("path '%s' does not exist", p))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	io.Copy(w, f)
}

// fsService is envd's filesystem service over the fake's sandboxes.
type fsService struct {
	filesystempbconnect.UnimplementedFilesystemHandler
	s *Server
}

// entry describes the file at sandbox path p, whose host path is hp.
func entry(p, hp string) (*filesystempb.EntryInfo, error) {
	st, err := os.Lstat(hp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("file not found: %s", p))
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	e := &filesystempb.EntryInfo{Name: path.Base(p), Path: p, Size: st.Size(), Mode: uint32(st.Mode().Perm()),
		Permissions: st.Mode().String(), Owner: "user", Group: "user", ModifiedTime: timestamppb.New(st.ModTime())}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		e.Type = filesystempb.FileType_FILE_TYPE_SYMLINK
		if t, err := os.Readlink(hp); err == nil {
			e.SymlinkTarget = &t
		}
	case st.IsDir():
		e.Type = filesystempb.FileType_FILE_TYPE_DIRECTORY
	default:
		e.Type = filesystempb.FileType_FILE_TYPE_FILE
	}
	return e, nil
}

// Stat describes one entry.
func (f fsService) Stat(ctx context.Context, req *connect.Request[filesystempb.StatRequest]) (*connect.Response[filesystempb.StatResponse], error) {
	sb, p := sandboxOf(ctx), sandboxPath(req.Msg.GetPath())
	e, err := entry(p, sb.filePath(p))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&filesystempb.StatResponse{Entry: e}), nil
}

// MakeDir creates a directory and its parents; an existing one is
// already_exists, as with envd.
func (f fsService) MakeDir(ctx context.Context, req *connect.Request[filesystempb.MakeDirRequest]) (*connect.Response[filesystempb.MakeDirResponse], error) {
	sb, p := sandboxOf(ctx), sandboxPath(req.Msg.GetPath())
	if readOnly(p) {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("cannot create directory %s", p))
	}
	hp := sb.filePath(p)
	if _, err := os.Stat(hp); err == nil {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory already exists: %s", p))
	}
	if err := os.MkdirAll(hp, 0o755); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	e, err := entry(p, hp)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&filesystempb.MakeDirResponse{Entry: e}), nil
}

// ListDir lists a directory, one level deep.
func (f fsService) ListDir(ctx context.Context, req *connect.Request[filesystempb.ListDirRequest]) (*connect.Response[filesystempb.ListDirResponse], error) {
	sb, p := sandboxOf(ctx), sandboxPath(req.Msg.GetPath())
	ents, err := os.ReadDir(sb.filePath(p))
	if err != nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("directory not found: %s", p))
	}
	out := &filesystempb.ListDirResponse{}
	for _, de := range ents {
		cp := path.Join(p, de.Name())
		if e, err := entry(cp, sb.filePath(cp)); err == nil {
			out.Entries = append(out.Entries, e)
		}
	}
	return connect.NewResponse(out), nil
}

// Remove removes a file or a directory tree.
func (f fsService) Remove(ctx context.Context, req *connect.Request[filesystempb.RemoveRequest]) (*connect.Response[filesystempb.RemoveResponse], error) {
	sb, p := sandboxOf(ctx), sandboxPath(req.Msg.GetPath())
	if err := os.RemoveAll(sb.filePath(p)); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&filesystempb.RemoveResponse{}), nil
}

// Move renames an entry.
func (f fsService) Move(ctx context.Context, req *connect.Request[filesystempb.MoveRequest]) (*connect.Response[filesystempb.MoveResponse], error) {
	sb := sandboxOf(ctx)
	src, dst := sandboxPath(req.Msg.GetSource()), sandboxPath(req.Msg.GetDestination())
	if err := os.Rename(sb.filePath(src), sb.filePath(dst)); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	e, err := entry(dst, sb.filePath(dst))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&filesystempb.MoveResponse{Entry: e}), nil
}
