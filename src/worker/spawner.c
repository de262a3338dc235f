/*
 * dcli-spawner: starts task processes for a dcli worker and relays their output.
 *
 * Why it exists: Node forks a copy of its own large address space for every child and wraps each
 * spawn in much JavaScript; this small process starts them cheaply and the worker only exchanges a few
 * bytes per task with it. It runs one per worker, for the worker's lifetime, and holds no policy:
 * kill, timeout and grace stay in the worker, which signals process groups itself.
 *
 * Protocol (all integers little-endian). Every frame is: u32 length of what follows, u8 type,
 * u32 task id, payload.
 *   Requests on stdin:
 *     SPAWN   cwd NUL, u32 argc, argc × (arg NUL), u32 envc, envc × ("NAME=value" NUL)
 *             (env entries are added to this process's own environment, which is the worker's)
 *     PAUSE   stop reading the task's pipes (its writes block once they fill)
 *     RESUME  read them again
 *   Events on stdout:
 *     READY   once, at start (task id 0)
 *     STARTED u32 pid — the program was executed; the pid is also its process group (setsid)
 *     FAILED  u32 errno, u8 stage (0 chdir, 1 exec, 2 pipe/fork) — nothing is running
 *     OUTPUT  u8 stream (1 stdout, 2 stderr), bytes
 *     EXITED  i32 exit code (-1 if signalled), i32 signal number (0 if exited), u8 1 if other
 *             processes are left in the task's group (0: the group is gone, none can join it)
 *     CLOSED  the process has exited and both of its pipes are at end of file: the task is over
 * A task's events come in this order: STARTED, OUTPUT and EXITED as they happen, CLOSED last.
 * End of file on stdin means the worker is gone: this process kills the groups of the tasks still
 * running and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

enum { REQ_SPAWN = 1, REQ_PAUSE = 2, REQ_RESUME = 3 };
enum { EV_READY = 0, EV_STARTED = 1, EV_FAILED = 2, EV_OUTPUT = 3, EV_EXITED = 4, EV_CLOSED = 5 };
enum { STAGE_CHDIR = 0, STAGE_EXEC = 1, STAGE_SETUP = 2 };

#define HEADER_BYTES 9
#define READ_CHUNK (64 * 1024)

struct task {
  uint32_t id;
  pid_t pid;
  int fds[2]; /* read ends of stdout and stderr, -1 once at end of file */
  int paused;
  int exited;
  int status; /* the wait status, once exited */
  int group_left; /* processes were left in the group when it exited */
  int closed; /* nothing more to do; removed at the end of the round */
};

static struct task *tasks;
static size_t task_count, task_capacity;
static int sigchld_pipe[2];
static int dev_null;
static unsigned char read_buffer[READ_CHUNK];

static void die(const char *what) {
  fprintf(stderr, "dcli-spawner: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void put_u32(unsigned char *at, uint32_t value) {
  at[0] = value & 0xff;
  at[1] = (value >> 8) & 0xff;
  at[2] = (value >> 16) & 0xff;
  at[3] = (value >> 24) & 0xff;
}

static uint32_t get_u32(const unsigned char *at) {
  return (uint32_t)at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;
}

/* Writes all of the iovecs to stdout, blocking: the worker reads its events without pause. */
static void write_all(struct iovec *iov, int count) {
  while (count > 0) {
    ssize_t written = writev(STDOUT_FILENO, iov, count);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) exit(0); /* the worker is gone */
      die("writing events");
    }
    while (count > 0 && (size_t)written >= iov->iov_len) {
      written -= (ssize_t)iov->iov_len;
      iov++;
      count--;
    }
    if (count > 0) {
      iov->iov_base = (char *)iov->iov_base + written;
      iov->iov_len -= (size_t)written;
    }
  }
}

/*
 * Events without data wait here until the end of the round (flush_events, before poll): a task's
 * EXITED and CLOSED, or the STARTED of several tasks, then reach the worker in one write and wake
 * it once, not once each. Output goes out at once, behind them.
 */
static unsigned char held_events[4096];
static size_t held_bytes;

static void flush_events(void) {
  if (held_bytes == 0) return;
  struct iovec iov = {held_events, held_bytes};
  held_bytes = 0;
  write_all(&iov, 1);
}

static void send_event(uint32_t id, uint8_t type, const void *payload, size_t payload_len, const void *data, size_t data_len) {
  unsigned char header[HEADER_BYTES];
  put_u32(header, (uint32_t)(5 + payload_len + data_len));
  header[4] = type;
  put_u32(header + 5, id);
  if (data_len == 0) {
    if (held_bytes + HEADER_BYTES + payload_len > sizeof held_events) flush_events();
    memcpy(held_events + held_bytes, header, HEADER_BYTES);
    if (payload_len > 0) memcpy(held_events + held_bytes + HEADER_BYTES, payload, payload_len);
    held_bytes += HEADER_BYTES + payload_len;
    return;
  }
  struct iovec iov[4] = {
      {held_events, held_bytes},
      {header, sizeof header},
      {(void *)payload, payload_len},
      {(void *)data, data_len},
  };
  held_bytes = 0;
  write_all(iov, 4);
}

static struct task *find_task(uint32_t id) {
  for (size_t i = 0; i < task_count; i++)
    if (tasks[i].id == id && !tasks[i].closed) return &tasks[i];
  return NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void send_failed(uint32_t id, int error, uint8_t stage) {
  unsigned char payload[5];
  put_u32(payload, (uint32_t)error);
  payload[4] = stage;
  send_event(id, EV_FAILED, payload, sizeof payload, NULL, 0);
}

/* The environment a task runs with: this process's own (the worker's), with `additions`
   ("NAME=value") replacing or adding variables, as putenv would. NULL when nothing is added. */
static char **task_environment(char **additions) {
  if (additions[0] == NULL) return NULL;
  size_t own = 0, added = 0;
  while (environ[own] != NULL) own++;
  while (additions[added] != NULL) added++;
  char **env = calloc(own + added + 1, sizeof(char *));
  if (env == NULL) die("allocating a task's environment");
  size_t count = 0;
  for (size_t i = 0; i < own; i++) {
    const char *equals = strchr(environ[i], '=');
    size_t name_length = equals == NULL ? strlen(environ[i]) : (size_t)(equals - environ[i]);
    int replaced = 0;
    for (size_t j = 0; j < added && !replaced; j++)
      replaced = strncmp(additions[j], environ[i], name_length) == 0 && additions[j][name_length] == '=';
    if (!replaced) env[count++] = environ[i];
  }
  for (size_t j = 0; j < added; j++) env[count++] = additions[j];
  return env;
}

/* What the child reports when it could not execute the program; it writes this in the memory it
   shares with this process until exec. */
struct start_failure {
  int error;
  uint8_t stage;
};

/* In the child, between vfork and exec: it shares this process's memory, so it changes nothing
   of it and leaves only by exec or _exit. Failures are written to *failure. */
static void run_child(volatile struct start_failure *failure, int out, int err, const char *cwd, char **argv) {
  setsid();
  /* Ignored signals would stay ignored across exec: the task starts with every default. The
     child has its own table of signal actions, so this leaves this process's alone. A signal sent
     to the worker's process group before setsid (a Ctrl-C) waits here, blocked: it was meant for
     the worker, not for a task not yet started, so it is dropped first (SIG_IGN discards a
     pending signal) rather than kill the task once the defaults are back. */
  sigset_t pending;
  sigpending(&pending);
  for (int number = 1; number < NSIG; number++) {
    if (number == SIGKILL || number == SIGSTOP) continue;
    if (sigismember(&pending, number) == 1) signal(number, SIG_IGN);
    signal(number, SIG_DFL);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  uint8_t stage = STAGE_CHDIR;
  if (cwd[0] == '\0' || chdir(cwd) == 0) {
    stage = STAGE_SETUP;
    if (dup2(dev_null, STDIN_FILENO) >= 0 && dup2(out, STDOUT_FILENO) >= 0 && dup2(err, STDERR_FILENO) >= 0) {
      stage = STAGE_EXEC;
      execvp(argv[0], argv);
    }
  }
  failure->error = errno;
  failure->stage = stage;
  _exit(127);
}

/*
 * Starts a task's program in a new session (so its pid is its process group), with stdin from
 * /dev/null, its output into the given pipes and the environment `env` (NULL: this process's).
 * vfork, not fork: the child borrows this process's memory until exec, so no page table is copied
 * and no copy-on-write fault follows. On a VM where those are dear, 8 concurrent spawns of `true`
 * ran 1.7x faster than with fork (bench scenario 1's machine). It returns once the program is
 * executed or could not be, so a failure is known here; the price is that an exec stalled on a
 * hung file system holds up this process until it completes. Returns 0, or the errno of the
 * failure with its stage in *stage.
 */
static int start_program(pid_t *pid, uint8_t *stage, const char *cwd, char **argv, char **env, int out, int err) {
  /* The program is looked up in the task's PATH, as execvp does with environ; set here, because
     the child must not write this process's memory. This process has one thread. */
  char **own = environ;
  if (env != NULL) environ = env;
  /* No handler of this process may run in the child, on this process's memory. */
  sigset_t all, previous;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &previous);
  volatile struct start_failure failure = {0, STAGE_SETUP};
  pid_t child = vfork();
  if (child == 0) run_child(&failure, out, err, cwd, argv);
  int error = child < 0 ? errno : failure.error;
  sigprocmask(SIG_SETMASK, &previous, NULL);
  environ = own;
  if (child > 0 && error != 0) {
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  *pid = child;
  *stage = failure.stage;
  return error;
}

/* Decodes a u32 count and that many NUL-terminated strings at *at, in place, into a
   NULL-terminated array; NULL when they do not fit before `end`. */
static char **take_strings(unsigned char **at, unsigned char *end) {
  if (end - *at < 4) return NULL;
  uint32_t count = get_u32(*at);
  *at += 4;
  if (count > (size_t)(end - *at)) return NULL; /* each string takes at least its NUL */
  char **strings = calloc((size_t)count + 1, sizeof(char *));
  if (strings == NULL) die("allocating a spawn request");
  for (uint32_t i = 0; i < count; i++) {
    unsigned char *nul = memchr(*at, '\0', (size_t)(end - *at));
    if (nul == NULL) {
      free(strings);
      return NULL;
    }
    strings[i] = (char *)*at;
    *at = nul + 1;
  }
  return strings;
}

static void spawn_task(uint32_t id, unsigned char *payload, size_t length) {
  /* Decode in place: strings are NUL-terminated inside the payload; pointers go into argv/env. */
  unsigned char *end = payload + length;
  char *cwd = (char *)payload;
  unsigned char *at = memchr(payload, '\0', length);
  if (at == NULL) goto malformed;
  at++;
  char **argv = take_strings(&at, end);
  char **env = take_strings(&at, end);
  if (argv == NULL || env == NULL || argv[0] == NULL) goto malformed;

  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    send_failed(id, errno, STAGE_SETUP);
    goto cleanup;
  }
  pid_t pid;
  uint8_t stage;
  char **task_env = task_environment(env);
  int error = start_program(&pid, &stage, cwd, argv, task_env, out[1], err[1]);
  free(task_env);
  if (error != 0) {
    send_failed(id, error, stage);
    goto cleanup;
  }
  unsigned char started[4];
  put_u32(started, (uint32_t)pid);
  send_event(id, EV_STARTED, started, sizeof started, NULL, 0);
  if (task_count == task_capacity) {
    task_capacity = task_capacity ? task_capacity * 2 : 16;
    tasks = realloc(tasks, task_capacity * sizeof *tasks);
    if (tasks == NULL) die("allocating tasks");
  }
  tasks[task_count++] = (struct task){.id = id, .pid = pid, .fds = {out[0], err[0]}};
  out[0] = err[0] = -1;

cleanup:
  close_fd(&out[0]);
  close_fd(&out[1]);
  close_fd(&err[0]);
  close_fd(&err[1]);
  free(argv);
  free(env);
  return;

malformed:
  fprintf(stderr, "dcli-spawner: malformed spawn request for task %u\n", id);
  exit(2);
}

static void on_sigchld(int signal_number) {
  (void)signal_number;
  int saved = errno;
  (void)!write(sigchld_pipe[1], "", 1);
  errno = saved;
}

/* A task is over once its process has exited and both pipes are at end of file. */
static void finish_if_done(struct task *task) {
  if (!task->exited || task->fds[0] >= 0 || task->fds[1] >= 0) return;
  send_event(task->id, EV_CLOSED, NULL, 0, NULL, 0);
  task->closed = 1;
}

/* Drops closed tasks; indices into the table change, so only between rounds. */
static void remove_closed_tasks(void) {
  size_t kept = 0;
  for (size_t i = 0; i < task_count; i++)
    if (!tasks[i].closed) tasks[kept++] = tasks[i];
  task_count = kept;
}

static void send_exited(struct task *task) {
  unsigned char payload[9];
  put_u32(payload, WIFEXITED(task->status) ? (uint32_t)WEXITSTATUS(task->status) : (uint32_t)-1);
  put_u32(payload + 4, WIFSIGNALED(task->status) ? (uint32_t)WTERMSIG(task->status) : 0);
  payload[8] = (unsigned char)task->group_left;
  send_event(task->id, EV_EXITED, payload, sizeof payload, NULL, 0);
}

static void reap_children(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (size_t i = 0; i < task_count; i++) {
      struct task *task = &tasks[i];
      if (task->pid != pid || task->exited) continue;
      task->exited = 1;
      task->status = status;
      /* Saves the worker a kill of an empty group for nearly every task. */
      task->group_left = kill(-pid, 0) == 0 || errno != ESRCH;
      send_exited(task);
      finish_if_done(task);
      break;
    }
  }
}

/* One read from one of a task's pipes: relays what it got, or notes end of file. */
static void relay_output(struct task *task, int stream) {
  ssize_t got = read(task->fds[stream], read_buffer, sizeof read_buffer);
  if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (got <= 0) {
    close_fd(&task->fds[stream]);
    finish_if_done(task);
    return;
  }
  unsigned char which = (unsigned char)(stream + 1);
  send_event(task->id, EV_OUTPUT, &which, 1, read_buffer, (size_t)got);
}

static unsigned char *requests;
static size_t request_bytes, request_capacity;

/*
 * The worker is gone (it closes stdin only once its tasks are over, so this is a crash or a
 * kill -9): its tasks are already given up as lost, so none may run on beside a retry.
 */
static void kill_running_groups(void) {
  for (size_t i = 0; i < task_count; i++) {
    kill(-tasks[i].pid, SIGKILL);
  }
}

/* Handles every complete request in the buffer; false on end of file. */
static int read_requests(void) {
  if (request_capacity - request_bytes < READ_CHUNK) {
    request_capacity = request_capacity * 2 + READ_CHUNK;
    requests = realloc(requests, request_capacity);
    if (requests == NULL) die("allocating the request buffer");
  }
  ssize_t got = read(STDIN_FILENO, requests + request_bytes, request_capacity - request_bytes);
  if (got < 0) {
    if (errno == EINTR || errno == EAGAIN) return 1;
    die("reading requests");
  }
  if (got == 0) return 0;
  request_bytes += (size_t)got;
  size_t at = 0;
  while (request_bytes - at >= HEADER_BYTES) {
    uint32_t length = get_u32(requests + at);
    if (length < 5) {
      fprintf(stderr, "dcli-spawner: malformed request frame\n");
      exit(2);
    }
    if (request_bytes - at < 4 + (size_t)length) break;
    uint8_t type = requests[at + 4];
    uint32_t id = get_u32(requests + at + 5);
    unsigned char *payload = requests + at + HEADER_BYTES;
    size_t payload_len = length - 5;
    at += 4 + length;
    struct task *task;
    switch (type) {
      case REQ_SPAWN:
        spawn_task(id, payload, payload_len);
        break;
      case REQ_PAUSE:
      case REQ_RESUME:
        /* A task already over has nothing left to pause. */
        if ((task = find_task(id)) != NULL) task->paused = type == REQ_PAUSE;
        break;
      default:
        fprintf(stderr, "dcli-spawner: unknown request type %u\n", type);
        exit(2);
    }
  }
  memmove(requests, requests + at, request_bytes - at);
  request_bytes -= at;
  return 1;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  /* This process shares the worker's process group: a Ctrl-C or a service manager's SIGTERM to
     the group asks the worker to drain, which needs this process until the worker exits (end of
     file on stdin). */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  dev_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (dev_null < 0) die("opening /dev/null");
  if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) != 0) die("creating the SIGCHLD pipe");
  struct sigaction action = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGCHLD, &action, NULL) != 0) die("handling SIGCHLD");
  send_event(0, EV_READY, NULL, 0, NULL, 0);

  struct pollfd *polled = NULL;
  size_t *owner = NULL; /* task index × 2 + 0 stdout, 1 stderr, for each polled fd */
  size_t polled_capacity = 0;
  for (;;) {
    size_t needed = 2 + task_count * 2;
    if (needed > polled_capacity) {
      polled_capacity = needed * 2;
      polled = realloc(polled, polled_capacity * sizeof *polled);
      owner = realloc(owner, polled_capacity * sizeof *owner);
      if (polled == NULL || owner == NULL) die("allocating the poll set");
    }
    polled[0] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
    polled[1] = (struct pollfd){.fd = sigchld_pipe[0], .events = POLLIN};
    size_t count = 2;
    for (size_t i = 0; i < task_count; i++) {
      if (tasks[i].paused) continue;
      for (int stream = 0; stream < 2; stream++) {
        if (tasks[i].fds[stream] < 0) continue;
        owner[count] = i * 2 + (size_t)stream;
        polled[count++] = (struct pollfd){.fd = tasks[i].fds[stream], .events = POLLIN};
      }
    }
    flush_events();
    if (poll(polled, count, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    /* Output, then exits: a task's output read in this round precedes its EXITED. */
    for (size_t i = 2; i < count; i++) {
      if (polled[i].revents == 0) continue;
      relay_output(&tasks[owner[i] / 2], (int)(owner[i] % 2));
    }
    if (polled[1].revents != 0) {
      char drain[64];
      while (read(sigchld_pipe[0], drain, sizeof drain) > 0) {
      }
      reap_children();
    }
    remove_closed_tasks();
    if (polled[0].revents != 0 && !read_requests()) {
      kill_running_groups();
      return 0;
    }
  }
}
