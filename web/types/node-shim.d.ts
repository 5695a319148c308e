// The few Node built-ins the package's scripts and tests use, for
// `tsc -p web/tsconfig.checkjs.json` (`@types/node` is not a dependency). Only the members
// used are declared, each as a narrower form of its `@types/node` declaration, so code that
// checks against this file checks against `@types/node` too. Also declared: the bare
// `fs`, `stream` and `child_process` and the global `Buffer`, which playwright-core's
// types name. Grow it when a script uses another member; do not loosen it.

/** A Node buffer: the bytes of a file, a stream chunk (never shared memory). */
interface Buffer extends Uint8Array<ArrayBuffer> {}
declare var Buffer: {
  concat(list: readonly Uint8Array[], totalLength?: number): Buffer;
};

declare var process: {
  readonly argv: string[];
  readonly env: { [name: string]: string | undefined };
  readonly execPath: string;
  readonly version: string;
  exitCode: number | string | null | undefined;
  readonly stdout: { write(text: string): boolean };
  exit(code?: number): never;
};

declare module 'node:fs' {
  type PathLike = string | Buffer | URL;
  interface Stats {
    size: number;
  }
  interface RmOptions {
    force?: boolean;
    recursive?: boolean;
  }
  class ReadStream {}
  function readFileSync(path: PathLike | number, options?: { encoding?: null; flag?: string } | null): Buffer;
  function readFileSync(path: PathLike | number, options: { encoding: 'utf8'; flag?: string } | 'utf8'): string;
  function readdirSync(path: PathLike, options?: { recursive?: boolean; encoding: 'utf8' }): string[];
  function writeFileSync(file: PathLike | number, data: string | ArrayBufferView): void;
  function existsSync(path: PathLike): boolean;
  function mkdtempSync(prefix: string): string;
  function mkdirSync(path: PathLike): void;
  function realpathSync(path: PathLike): string;
  function rmSync(path: PathLike, options?: RmOptions): void;
  function statSync(path: PathLike): Stats;
}

declare module 'node:fs/promises' {
  import type { PathLike, RmOptions } from 'node:fs';
  function readFile(path: PathLike, options?: { encoding?: null; flag?: string } | null): Promise<Buffer>;
  function readFile(path: PathLike, options: { encoding: 'utf8'; flag?: string } | 'utf8'): Promise<string>;
  function writeFile(file: PathLike, data: string | ArrayBufferView): Promise<void>;
  function mkdtemp(prefix: string): Promise<string>;
  function rm(path: PathLike, options?: RmOptions): Promise<void>;
}

declare module 'node:crypto' {
  interface Hash {
    update(data: string | ArrayBufferView): Hash;
    digest(encoding: 'hex' | 'base64'): string;
  }
  function createHash(algorithm: string): Hash;
  class KeyObject {
    export(options: { format: 'pem'; type: 'pkcs1' | 'pkcs8' | 'spki' }): string | Buffer;
  }
  function createPrivateKey(key: { key: Buffer; format: 'der'; type: 'pkcs1' | 'pkcs8' }): KeyObject;
  function createPublicKey(key: KeyObject): KeyObject;
}

declare module 'node:os' {
  function tmpdir(): string;
}

declare module 'node:path' {
  function join(...paths: string[]): string;
  function extname(path: string): string;
  function normalize(path: string): string;
  function resolve(...paths: string[]): string;
}

declare module 'node:url' {
  function fileURLToPath(url: string | URL): string;
  function pathToFileURL(path: string): URL;
}

declare module 'node:stream' {
  class Readable implements AsyncIterable<Buffer> {
    on(event: 'data', listener: (chunk: Buffer) => void): this;
    [Symbol.asyncIterator](): AsyncIterator<Buffer>;
  }
}

declare module 'node:child_process' {
  import type { Readable } from 'node:stream';
  type Signals = 'SIGINT' | 'SIGTERM' | 'SIGKILL';
  type StdioOption = 'ignore' | 'pipe' | 'inherit';
  interface SpawnOptions {
    cwd?: string | URL;
    env?: { [name: string]: string | undefined };
    stdio?: StdioOption | StdioOption[];
  }
  interface ExecFileOptions {
    env?: { [name: string]: string | undefined };
    maxBuffer?: number;
  }
  class ChildProcess {
    readonly stderr: Readable | null;
    readonly exitCode: number | null;
    kill(signal?: Signals | number): boolean;
    on(event: 'exit', listener: (code: number | null, signal: Signals | null) => void): this;
  }
  /** A child with only stderr piped (`ChildProcessByStdio<null, null, Readable>`). */
  interface ChildProcessWithStderr extends ChildProcess {
    readonly stderr: Readable;
  }
  function spawn(command: string, args: readonly string[], options: SpawnOptions & { stdio: ['ignore', 'ignore', 'pipe'] }): ChildProcessWithStderr;
  function spawn(command: string, args?: readonly string[], options?: SpawnOptions): ChildProcess;
  /** The options of `spawnSync` with its output as text (`SpawnSyncOptionsWithStringEncoding`). */
  interface SpawnSyncOptions {
    cwd?: string | URL;
    env?: { [name: string]: string | undefined };
    timeout?: number;
    killSignal?: Signals | number;
    maxBuffer?: number;
    encoding: 'utf8';
  }
  /** What `spawnSync` gives with its output as text (`SpawnSyncReturns<string>`). */
  interface SpawnSyncReturns {
    stdout: string;
    stderr: string;
    status: number | null;
    signal: Signals | null;
    error?: Error;
  }
  function spawnSync(command: string, args: readonly string[], options: SpawnSyncOptions): SpawnSyncReturns;
  /** The error a failed `execFile` rejects with: the exit code, and the output so far. */
  interface ExecFileException extends Error {
    code?: number | string;
    stdout?: string;
    stderr?: string;
  }
  function execFile(
    file: string,
    args: readonly string[],
    options: ExecFileOptions,
    callback: (error: ExecFileException | null, stdout: string, stderr: string) => void,
  ): ChildProcess;
  namespace execFile {
    function __promisify__(file: string, args: readonly string[], options: ExecFileOptions): Promise<{ stdout: string; stderr: string }>;
  }
}

declare module 'node:net' {
  interface AddressInfo {
    address: string;
    family: string;
    port: number;
  }
}

declare module 'node:http' {
  import type { AddressInfo } from 'node:net';
  import type { Readable } from 'node:stream';
  class IncomingMessage extends Readable {
    url?: string | undefined;
    method?: string | undefined;
  }
  class ServerResponse {
    writeHead(statusCode: number, headers?: { [name: string]: string | number }): this;
    end(data?: string | Uint8Array): this;
  }
  class Server {
    listen(port: number, hostname: string, listeningListener: () => void): this;
    address(): AddressInfo | string | null;
    close(callback?: (error?: Error) => void): this;
  }
  function createServer(listener: (request: IncomingMessage, response: ServerResponse) => void | Promise<void>): Server;
}

declare module 'node:util' {
  type CustomPromisify<T> = { __promisify__: T };
  function promisify<T>(fn: CustomPromisify<T>): T;
  interface ParseArgsOptionConfig {
    type: 'string' | 'boolean';
  }
  interface ParseArgsConfig {
    args?: string[];
    options?: { [name: string]: ParseArgsOptionConfig };
    strict?: boolean;
    allowPositionals?: boolean;
  }
  type ParsedValues<T extends ParseArgsConfig> = {
    -readonly [K in keyof T['options']]?: T['options'][K] extends { type: 'string' } ? string : boolean;
  };
  function parseArgs<T extends ParseArgsConfig>(config: T): { values: ParsedValues<T>; positionals: string[] };
}

declare module 'node:test' {
  type Fn = () => void | Promise<void>;
  type HookFn = () => unknown;
  function test(name: string, fn: Fn): Promise<void>;
  function describe(name: string, fn: Fn): Promise<void>;
  function before(fn: HookFn): void;
  function after(fn: HookFn): void;
}

declare module 'node:assert/strict' {
  type AssertPredicate = RegExp | (new (...args: never[]) => object) | ((thrown: unknown) => boolean) | object | Error;
  function assert(value: unknown, message?: string | Error): asserts value;
  namespace assert {
    function ok(value: unknown, message?: string | Error): asserts value;
    function fail(message?: string | Error): never;
    function equal<T>(actual: unknown, expected: T, message?: string | Error): asserts actual is T;
    function notEqual(actual: unknown, expected: unknown, message?: string | Error): void;
    function deepEqual<T>(actual: unknown, expected: T, message?: string | Error): asserts actual is T;
    function match(value: string, regExp: RegExp, message?: string | Error): void;
    function throws(block: () => unknown, message?: string | Error): void;
    function throws(block: () => unknown, error: AssertPredicate, message?: string | Error): void;
    function doesNotThrow(block: () => unknown, message?: string | Error): void;
    function rejects(block: (() => Promise<unknown>) | Promise<unknown>, message?: string | Error): Promise<void>;
    function rejects(block: (() => Promise<unknown>) | Promise<unknown>, error: AssertPredicate, message?: string | Error): Promise<void>;
  }
  export default assert;
}

// The bare names playwright-core's types import.
declare module 'fs' {
  export { ReadStream } from 'node:fs';
}
declare module 'stream' {
  export { Readable } from 'node:stream';
}
declare module 'child_process' {
  export { ChildProcess } from 'node:child_process';
}
