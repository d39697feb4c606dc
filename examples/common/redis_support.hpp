// Plumbing shared by the Redis examples (redis_pipeline, redis_streams): a minimal hiredis
// connection and a private redis-server for tests. Nothing here is about batching; the .cpp
// files are the examples.
#pragma once

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace redis {

struct ReplyDeleter {
    void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// The text of a string or status reply ("" for anything else, e.g. nil).
inline std::string text(const redisReply* reply) {
    const bool has_text = reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS;
    return has_text ? std::string(reply->str, reply->len) : std::string();
}

// An integer reply, or a string holding an integer (HGET, HVALS); throws on anything else.
inline long long integer(const redisReply* reply) {
    if (reply->type == REDIS_REPLY_INTEGER) {
        return reply->integer;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        return std::stoll(text(reply));
    }
    throw std::runtime_error("redis: expected an integer reply");
}

// One blocking connection. Not thread-safe: every thread that talks to Redis has its own.
class Connection {
public:
    Connection(const std::string& host, int port) {
        const timeval connect_timeout{2, 0};
        context_ = redisConnectWithTimeout(host.c_str(), port, connect_timeout);
        if (context_ == nullptr || context_->err != 0) {
            const std::string reason = context_ != nullptr ? context_->errstr : "out of memory";
            redisFree(context_);
            throw std::runtime_error("cannot connect to redis at " + host + ":" +
                                     std::to_string(port) + ": " + reason);
        }
        // Longer than any BLOCK the example asks for: a stuck server fails instead of hanging.
        const timeval command_timeout{10, 0};
        redisSetTimeout(context_, command_timeout);
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection() { redisFree(context_); }

    // True after an I/O or protocol error: the connection cannot be used again.
    bool broken() const { return context_->err != 0; }

    // Queues one command; nothing is sent until the next next_reply(). @p words: a sequence of
    // strings or string views (a braced list such as {"GET", key} makes a vector of strings;
    // an array of string views queues a large value without copying it first).
    template <class Words = std::vector<std::string>>
    void append(const Words& words) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        for (const auto& word : words) {
            argv.push_back(word.data());
            lengths.push_back(word.size());
        }
        if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(),
                                   lengths.data()) != REDIS_OK) {
            fail("append");
        }
    }

    // Sends whatever is queued and reads the reply to the oldest queued command.
    Reply next_reply() {
        void* raw = nullptr;
        if (redisGetReply(context_, &raw) != REDIS_OK || raw == nullptr) {
            fail("read reply");
        }
        Reply reply(static_cast<redisReply*>(raw));
        if (reply->type == REDIS_REPLY_ERROR) {
            throw std::runtime_error("redis error: " + std::string(reply->str, reply->len));
        }
        return reply;
    }

    // One command, one round trip.
    Reply command(const std::vector<std::string>& words) {
        append(words);
        return next_reply();
    }

private:
    [[noreturn]] void fail(const char* what) const {
        throw std::runtime_error(std::string("redis ") + what + ": " + context_->errstr);
    }

    redisContext* context_ = nullptr;
};

// The server's version ("7.0.15"; "?" if INFO does not say).
inline std::string server_version(Connection& connection) {
    const std::string info = text(connection.command({"INFO", "server"}).get());
    const std::string field = "redis_version:";
    const std::size_t at = info.find(field);
    if (at == std::string::npos) {
        return "?";
    }
    const std::size_t end = info.find_first_of("\r\n", at);
    return info.substr(at + field.size(), end - at - field.size());
}

// The path of an executable: `name` itself if it contains a slash, else the first match on
// PATH; "" if there is none.
inline std::string find_executable(const std::string& name) {
    if (name.find('/') != std::string::npos) {
        return access(name.c_str(), X_OK) == 0 ? name : std::string();
    }
    const char* path = std::getenv("PATH");
    const std::string directories = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t begin = 0;
    for (;;) {
        const std::size_t colon = directories.find(':', begin);
        const std::string directory = directories.substr(begin, colon - begin);
        const std::string candidate = (directory.empty() ? "." : directory) + "/" + name;
        if (access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
        if (colon == std::string::npos) {
            return std::string();
        }
        begin = colon + 1;
    }
}

// A loopback port nobody listens on right now (the kernel picks it).
inline int free_loopback_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                    getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    close(fd);
    if (!ok) {
        throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(errno));
    }
    return ntohs(address.sin_port);
}

// A private redis-server on a free port of @p host (a loopback address), persistence off, in a
// temporary directory; stopped (and the directory removed) on destruction.
class Server {
public:
    explicit Server(const std::string& binary, std::string host = "127.0.0.1")
        : host_(std::move(host)) {
        char dir_template[] = "/tmp/microbatch-redis-XXXXXX";
        if (mkdtemp(dir_template) == nullptr) {
            throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
        }
        dir_ = dir_template;
        // Another process may take the port between our check and redis binding it: retry.
        for (int attempt = 0; attempt < 3 && pid_ <= 0; ++attempt) {
            port_ = free_loopback_port();
            start(binary);
        }
        if (pid_ <= 0) {
            remove_files();
            throw std::runtime_error("redis-server did not start; its log:\n" + last_log_);
        }
    }
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    ~Server() {
        stop();
        remove_files();
    }

    int port() const { return port_; }

private:
    void start(const std::string& binary) {
        const std::string port_text = std::to_string(port_);
        const std::string log_path = dir_ + "/redis.log";
        // Everything the child needs is prepared before fork().
        std::vector<std::string> words{
            binary, "--port", port_text, "--bind",      host_, "--save",    "", "--appendonly",
            "no",   "--dir",  dir_,      "--daemonize", "no",  "--logfile", ""};
        std::vector<char*> argv;
        for (std::string& word : words) {
            argv.push_back(word.data());
        }
        argv.push_back(nullptr);
        const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (log_fd < 0) {
            throw std::runtime_error("cannot create " + log_path + ": " + std::strerror(errno));
        }
        const pid_t pid = fork();
        if (pid < 0) {
            close(log_fd);
            throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
        }
        if (pid == 0) {
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive this program, even if killed
#endif
            dup2(log_fd, STDOUT_FILENO);
            dup2(log_fd, STDERR_FILENO);
            execv(argv[0], argv.data());
            _exit(127);
        }
        close(log_fd);

        // Ready when it answers PING; give up after 10 s or when the process exits.
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < give_up) {
            if (waitpid(pid, nullptr, WNOHANG) == pid) {
                last_log_ = read_log();
                return;  // exited (e.g. the port was taken): pid_ stays 0
            }
            try {
                Connection probe(host_, port_);
                if (text(probe.command({"PING"}).get()) == "PONG") {
                    pid_ = pid;
                    return;
                }
            } catch (const std::exception&) {
                // not listening yet
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        last_log_ = "(no answer to PING within 10 s)\n" + read_log();
    }

    void stop() {
        if (pid_ <= 0) {
            return;
        }
        kill(pid_, SIGTERM);  // with --save '' redis exits at once without writing anything
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (waitpid(pid_, nullptr, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() >= give_up) {
                kill(pid_, SIGKILL);
                waitpid(pid_, nullptr, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        pid_ = 0;
    }

    std::string read_log() const {
        std::string log_text;
        if (FILE* log = std::fopen((dir_ + "/redis.log").c_str(), "r")) {
            char buffer[4096];
            std::size_t n = 0;
            while ((n = std::fread(buffer, 1, sizeof buffer, log)) > 0) {
                log_text.append(buffer, n);
            }
            std::fclose(log);
        }
        return log_text.size() > 2000 ? log_text.substr(log_text.size() - 2000) : log_text;
    }

    void remove_files() const {
        std::remove((dir_ + "/redis.log").c_str());
        rmdir(dir_.c_str());
    }

    std::string host_;
    std::string dir_;
    std::string last_log_;
    int port_ = 0;
    pid_t pid_ = 0;
};

// For --spawn-redis: a private server running @p binary (a path, or a name looked up on PATH)
// bound to @p host; nullptr, after printing "<program>: SKIPPED: ..." on stdout, if the binary
// is not found (the caller exits with CTest's skip status).
inline std::unique_ptr<Server> spawn_server(const char* program, const std::string& binary,
                                            const std::string& host = "127.0.0.1") {
    const std::string path = find_executable(binary);
    if (path.empty()) {
        std::printf("%s: SKIPPED: %s not found; install the Debian package redis-server\n", program,
                    binary.c_str());
        return nullptr;
    }
    return std::make_unique<Server>(path, host);
}

}  // namespace redis
