/**
 * The arguments of the parity runners that decide every job of a work directory
 * (`browser/parity-chromium.mjs`, `test/parity-workerd.mjs`): `--work <dir> --jobs <n>`.
 */

import { parseArgs } from 'node:util';

/**
 * The work directory and the number of jobs, or the runner's usage error.
 *
 * @param {string[]} argv the arguments after the script
 * @param {string} usage the runner's usage line
 * @returns {{work: string, jobs: number} | {error: {code: string, message: string, help: string}}}
 */
export function jobArgs(argv, usage) {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { work: { type: 'string' }, jobs: { type: 'string' } }, strict: true }));
  } catch (e) {
    return { error: { code: 'runner.usage', message: e instanceof Error ? e.message : String(e), help: usage } };
  }
  const jobs = Number(values.jobs);
  if (!values.work || !Number.isInteger(jobs) || jobs < 0) return { error: { code: 'runner.usage', message: '--work and --jobs are required', help: usage } };
  return { work: values.work, jobs };
}
