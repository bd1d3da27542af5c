"""The classic baseline every text classifier should be compared with, on the same splits."""

from __future__ import annotations

from dataclasses import dataclass

BASELINE = "TF-IDF (character 2-5-grams) + logistic regression"


@dataclass(frozen=True)
class BaselineScores:
    """How the baseline did on the test split."""

    method: str
    test_accuracy: float
    test_f1: float  # macro


def tfidf_logistic_regression(train_texts: list[str], train_labels: list[int],
                              test_texts: list[str], test_labels: list[int]) -> BaselineScores:
    """Test accuracy and macro F1 of TF-IDF + logistic regression trained on the training split.

    If it matches the transformer, the transformer has not earned its cost on this data.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    classifier = LogisticRegression(C=10.0, max_iter=2000)
    classifier.fit(vectorizer.fit_transform(train_texts), train_labels)
    predicted = classifier.predict(vectorizer.transform(test_texts))
    return BaselineScores(BASELINE, float(accuracy_score(test_labels, predicted)),
                          float(f1_score(test_labels, predicted, average="macro")))
