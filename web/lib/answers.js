/**
 * The builder of the check path's answers (`Answers`): the module's value calls
 * (`checkValue`, `checkAt`, `allowedActionsValue`) make decisions through it, one call from
 * the module per object.
 *
 * Imports nothing at the top level, so it runs unchanged in browsers, Node and workerd.
 */

/** @import { DecisionView, ReasonView } from '../index.js' */

/**
 * What the module's class builds its answers with: plain objects made here, by object
 * literals, one call from the module each (a property set from the module is a call of its
 * own, and most of a check's time was such calls). `fill` puts the fields of the request
 * being answered, which `ask` gave before the call, into a message the module keeps as a
 * template (`\0p` principal, `\0a` action, `\0r` resource, `\0t` target). For code
 * that drives the glue directly: `new glue.Clearance(new Answers())`, and `ask` before
 * each `checkValue` or `allowedActionsValue`.
 */
export class Answers {
  principal = '';
  action = '';
  resource = '';
  /** @type {string | null | undefined} */
  target = null;
  /** The templates seen, split at their markers; as many as the policy has. */
  /** @type {Map<string, string[]>} */
  #templates = new Map();

  /**
   * The request the next answer is for.
   *
   * @param {string} principal
   * @param {string} action
   * @param {string} resource
   * @param {string | null | undefined} target
   */
  ask(principal, action, resource, target) {
    this.principal = principal;
    this.action = action;
    this.resource = resource;
    this.target = target;
  }

  /**
   * @param {boolean} allowed
   * @param {ReasonView[]} reasons
   * @param {number} revision
   * @param {string} policy_hash
   * @param {string | undefined} valid_until
   * @returns {DecisionView}
   */
  decision(allowed, reasons, revision, policy_hash, valid_until) {
    return valid_until === undefined
      ? { allowed, reasons, revision, policy_hash }
      : { allowed, reasons, revision, policy_hash, valid_until };
  }

  /**
   * @param {boolean} allowed
   * @param {ReasonView} reason
   * @param {number} revision
   * @param {string} policy_hash
   * @param {string | undefined} valid_until
   * @returns {DecisionView}
   */
  decision1(allowed, reason, revision, policy_hash, valid_until) {
    return valid_until === undefined
      ? { allowed, reasons: [reason], revision, policy_hash }
      : { allowed, reasons: [reason], revision, policy_hash, valid_until };
  }

  /**
   * @param {string} code
   * @param {string} rule
   * @param {string} message
   * @param {string | undefined} at
   * @returns {ReasonView}
   */
  reason(code, rule, message, at) {
    return at === undefined ? { code, rule, message } : { code, rule, message, at };
  }

  /**
   * @param {string} template
   * @returns {string}
   */
  fill(template) {
    let parts = this.#templates.get(template);
    if (parts === undefined) {
      // Split once per template: its text, then per marker the field's letter and the
      // text after it. A regular expression per call was a tenth of a check.
      parts = template.split('\0');
      this.#templates.set(template, parts);
    }
    let out = parts[0];
    for (let i = 1; i < parts.length; i += 1) {
      const part = parts[i];
      const f = part[0];
      if (f === 'p') out += this.principal;
      else if (f === 'a') out += this.action;
      else if (f === 'r') out += this.resource;
      else if (f === 't') out += this.target ?? '';
      else out += '\0';
      out += f === 'p' || f === 'a' || f === 'r' || f === 't' ? part.slice(1) : part;
    }
    return out;
  }

  /**
   * @param {string[]} actions
   * @param {DecisionView | undefined} denied
   * @returns {{actions: string[], denied?: DecisionView}}
   */
  actions(actions, denied) {
    return denied === undefined ? { actions } : { actions, denied };
  }
}
