//! Grading an answer the way LongMemEval does: one yes/no question to a judge model, with a
//! rule set chosen by the question's type.
//!
//! The rules are LongMemEval's (`get_anscheck_prompt` in src/evaluation/evaluate_qa.py of
//! https://github.com/xiaowu0162/LongMemEval): containing the reference answer, or every step to
//! it, passes; a partial answer fails; temporal questions forgive an off-by-one day count;
//! knowledge updates pass when the latest fact is given, even beside older ones; preference
//! questions are graded against a rubric; abstention questions pass when the model says it
//! cannot know. The wording here is ours, so figures may differ slightly from ones graded with
//! the original prompts; the call around them is the script's: the prompt as the only (user)
//! message, temperature 0, at most 10 tokens, and "yes" anywhere in the lowered reply means
//! correct.

/// The opening every grading prompt shares but abstention's: replay fixtures tell a judge call
/// from an answer call by it.
const CONTAINS: &str = "You are grading a model's answer. You get a question, the reference answer and the model's response. Reply yes if the response contains the reference answer, otherwise reply no.";

/// What the response must do beyond containing the answer, for the types that share the
/// opening (single-session-user, single-session-assistant, multi-session).
const STEPS: &str = " A response that is equivalent to the reference answer, or that gives every intermediate step leading to it, also earns yes. A response that holds only part of the information the reference answer needs earns no.";

/// temporal-reasoning: off-by-one day counts pass.
const OFF_BY_ONE: &str = " Do not count off-by-one errors in a number of days against the response: when the question asks how many days, weeks or months, and the response is off by one (19 days where the reference says 18, say), it is still correct.";

/// knowledge-update: older facts mentioned alongside the new one do not fail it.
const UPDATED: &str = " When the response mentions earlier information as well as the updated answer, it is still correct as long as the updated answer is the one the reference asks for.";

const PREFERENCE: &str = "You are grading a model's answer. You get a question, a rubric describing the personalized response the user wants, and the model's response. Reply yes if the response satisfies what the rubric asks for, otherwise reply no. It need not cover every point of the rubric: it is correct when it recalls and uses the user's personal information correctly.";

const ABSTENTION: &str = "You are grading a model's answer to a question that cannot be answered from what the user said. You get the question, an explanation of why, and the model's response. Reply yes if the model recognises that the question cannot be answered, for instance by saying the information is incomplete or that related information was given but not what was asked; otherwise reply no.";

/// The judge's prompt for a question of `kind` (abstention questions have their own, whatever
/// their type); `None` for a type LongMemEval does not define.
pub fn prompt(kind: &str, abstention: bool, question: &str, answer: &str, response: &str) -> Option<String> {
    let ask = "Is the response correct? Reply with yes or no only.";
    let (intro, label, ask) = if abstention {
        (
            ABSTENTION.to_owned(),
            "Explanation",
            "Does the model recognise that the question cannot be answered? Reply with yes or no only.",
        )
    } else {
        match kind {
            "single-session-user" | "single-session-assistant" | "multi-session" => {
                (format!("{CONTAINS}{STEPS} "), "Correct Answer", ask)
            }
            "temporal-reasoning" => (format!("{CONTAINS}{STEPS}{OFF_BY_ONE} "), "Correct Answer", ask),
            "knowledge-update" => (format!("{CONTAINS}{UPDATED}"), "Correct Answer", ask),
            "single-session-preference" => (PREFERENCE.to_owned(), "Rubric", ask),
            _ => return None,
        }
    };
    Some(format!(
        "{intro}\n\nQuestion: {question}\n\n{label}: {answer}\n\nModel Response: {response}\n\n{ask}"
    ))
}

/// The question types LongMemEval grades, for error messages.
pub const TYPES: &str =
    "single-session-user, single-session-assistant, single-session-preference, multi-session, temporal-reasoning, knowledge-update";

/// The judge's verdict, read as LongMemEval reads it.
pub fn verdict(reply: &str) -> bool {
    reply.to_lowercase().contains("yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_per_type() {
        let p = |kind, abs| prompt(kind, abs, "Q?", "A", "R").unwrap();
        // The knowledge-update prompt has no space before its blank line, the others one:
        // LongMemEval's templates differ there, and the prompts are kept byte for byte.
        assert!(p("knowledge-update", false).contains("reference asks for.\n\nQuestion: Q?\n\nCorrect Answer: A\n\n"));
        assert!(p("multi-session", false).contains("earns no. \n\nQuestion: Q?"));
        assert!(p("temporal-reasoning", false).contains("off-by-one errors in a number of days"));
        assert!(p("single-session-preference", false).contains("\n\nRubric: A\n\n"));
        let abs = p("single-session-user", true);
        assert!(abs.starts_with("You are grading a model's answer to a question that cannot be answered"));
        assert!(abs.contains("\n\nExplanation: A\n\nModel Response: R\n\nDoes the model recognise"));
        assert!(p("single-session-assistant", false).ends_with("Is the response correct? Reply with yes or no only."));
        assert_eq!(prompt("open-domain", false, "Q", "A", "R"), None);
        // An abstention question is graded as such whatever its type.
        assert!(prompt("open-domain", true, "Q", "A", "R").is_some());
    }

    #[test]
    fn reads_verdicts_like_longmemeval() {
        for (reply, ok) in [
            ("yes", true),
            ("Yes.", true),
            ("YES", true),
            ("no", false),
            ("No, it does not.", false),
        ] {
            assert_eq!(verdict(reply), ok, "{reply}");
        }
    }
}
