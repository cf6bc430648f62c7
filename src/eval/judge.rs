//! Grading an answer the way LongMemEval does: one yes/no question to a judge model, with a
//! prompt chosen by the question's type.
//!
//! The prompts are LongMemEval's own, word for word, because the published scores were graded
//! with them and a paraphrase would grade differently. Source: `get_anscheck_prompt` in
//! src/evaluation/evaluate_qa.py of https://github.com/xiaowu0162/LongMemEval (MIT License,
//! Copyright (c) 2024 Di Wu). The call around them follows the same script: the prompt as the
//! only (user) message, temperature 0, at most 10 tokens, and "yes" anywhere in the lowered
//! reply means correct.

/// The opening every grading prompt shares but abstention's: replay fixtures tell a judge call
/// from an answer call by it.
const CONTAINS: &str = "I will give you a question, a correct answer, and a response from a model. Please answer yes if the response contains the correct answer. Otherwise, answer no.";

/// What the response must do beyond containing the answer, for the types that share the
/// opening (single-session-user, single-session-assistant, multi-session).
const STEPS: &str = " If the response is equivalent to the correct answer or contains all the intermediate steps to get the correct answer, you should also answer yes. If the response only contains a subset of the information required by the answer, answer no.";

/// temporal-reasoning: off-by-one day counts pass.
const OFF_BY_ONE: &str = " In addition, do not penalize off-by-one errors for the number of days. If the question asks for the number of days/weeks/months, etc., and the model makes off-by-one errors (e.g., predicting 19 days when the answer is 18), the model's response is still correct.";

/// knowledge-update: older facts mentioned alongside the new one do not fail it.
const UPDATED: &str = " If the response contains some previous information along with an updated answer, the response should be considered as correct as long as the updated answer is the required answer.";

const PREFERENCE: &str = "I will give you a question, a rubric for desired personalized response, and a response from a model. Please answer yes if the response satisfies the desired response. Otherwise, answer no. The model does not need to reflect all the points in the rubric. The response is correct as long as it recalls and utilizes the user's personal information correctly.";

const ABSTENTION: &str = "I will give you an unanswerable question, an explanation, and a response from a model. Please answer yes if the model correctly identifies the question as unanswerable. The model could say that the information is incomplete, or some other information is given but the asked information is not.";

/// The judge's prompt for a question of `kind` (abstention questions have their own, whatever
/// their type); `None` for a type LongMemEval does not define.
pub fn prompt(kind: &str, abstention: bool, question: &str, answer: &str, response: &str) -> Option<String> {
    let ask = "Is the model response correct? Answer yes or no only.";
    let (intro, label, ask) = if abstention {
        (
            ABSTENTION.to_owned(),
            "Explanation",
            "Does the model correctly identify the question as unanswerable? Answer yes or no only.",
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
        assert!(p("knowledge-update", false).contains("required answer.\n\nQuestion: Q?\n\nCorrect Answer: A\n\n"));
        assert!(p("multi-session", false).contains("answer no. \n\nQuestion: Q?"));
        assert!(p("temporal-reasoning", false).contains("off-by-one errors for the number of days"));
        assert!(p("single-session-preference", false).contains("\n\nRubric: A\n\n"));
        let abs = p("single-session-user", true);
        assert!(abs.starts_with("I will give you an unanswerable question"));
        assert!(abs.contains("\n\nExplanation: A\n\nModel Response: R\n\nDoes the model correctly identify"));
        assert!(p("single-session-assistant", false).ends_with("Is the model response correct? Answer yes or no only."));
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
